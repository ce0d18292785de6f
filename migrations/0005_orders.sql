-- Orders, clarifications and the outbox: what classification, generation and sending need
-- beyond the initial schema.

-- The language replies to an order use, and who drafted it.
ALTER TABLE orders ADD COLUMN language text CHECK (language IN ('en', 'pt', 'es'));
ALTER TABLE orders ADD COLUMN provider text;
-- When the ready notice and the bucket copy were taken care of (NULL: still to do).
ALTER TABLE orders ADD COLUMN delivered_at timestamptz;
ALTER TABLE orders ADD COLUMN cancelled_reason text;

-- The conversation's channel and the last message from the contact: WhatsApp accepts free-form
-- messages only within 24 hours of it.
ALTER TABLE conversations ADD COLUMN source_type text;
ALTER TABLE conversations ADD COLUMN last_incoming_at timestamptz;
-- Clarifications in progress, for the timeout sweep.
CREATE INDEX conversations_clarifying_idx ON conversations (updated_at)
    WHERE context_json ? 'clarification';

-- Outbox: when the first attempt left (to recognise our message in the conversation later).
ALTER TABLE outbox ADD COLUMN first_attempt_at timestamptz;
ALTER TABLE outbox ADD COLUMN last_attempt_at timestamptz;

-- Classification: notes of a conversation waiting for their turn, in creation order.
CREATE INDEX meeting_notes_classify_pending_idx
    ON meeting_notes (chatwoot_account_id, chatwoot_conversation_id, message_created_at, id)
    WHERE classification_status = 'pending';
