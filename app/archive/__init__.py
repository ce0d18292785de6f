"""Archive: a message row becomes objects in its owner's bucket (message JSON, media)."""
