"""Voice notes to text: providers, the job, offline Whisper."""
