-- Who a message belongs to is decided once, at ingestion (app/chatwoot/payloads.py: the Message
-- view's contact), and kept on the row; which user a contact is linked to is decided once, by
-- contact_user() below. Every query that needs either reads these instead of the payload.

ALTER TABLE meeting_notes
    ADD COLUMN IF NOT EXISTS contact_phone text,
    ADD COLUMN IF NOT EXISTS contact_identifier text;

-- Rows ingested before: the contact as the archive job read it then (the sender of a contact's
-- message, else the conversation's contact).
UPDATE meeting_notes n
   SET contact_phone = nullif(c.contact ->> 'phone_number', ''),
       contact_identifier = nullif(c.contact ->> 'identifier', '')
  FROM (
    SELECT id,
           CASE WHEN (payload -> 'sender' ->> 'type' = 'contact'
                      OR (message_type = 'incoming' AND NOT (payload -> 'sender' ? 'type')))
                     AND jsonb_typeof(payload -> 'sender') = 'object'
                THEN payload -> 'sender'
                ELSE payload #> '{conversation,meta,sender}'
           END AS contact
      FROM meeting_notes
     WHERE contact_phone IS NULL AND contact_identifier IS NULL
  ) c
 WHERE c.id = n.id AND jsonb_typeof(c.contact) = 'object';

-- The user a contact is linked to, per Chatwoot account: by contact id first, then identifier,
-- then phone (E.164). The one rule; app/users/contacts.py and every query call it.
CREATE OR REPLACE FUNCTION contact_user(
    p_account_id integer, p_contact_id text, p_identifier text, p_phone text
) RETURNS TABLE (user_id text, bucket_name text, link_type text)
LANGUAGE sql STABLE AS $$
    SELECT l.user_id, m.bucket_name, l.link_type
      FROM contact_links l
      JOIN user_bucket_mapping m ON m.user_id = l.user_id
     WHERE l.chatwoot_account_id = p_account_id
       AND ((l.link_type = 'contact_id' AND l.link_value = p_contact_id)
         OR (l.link_type = 'identifier' AND l.link_value = p_identifier)
         OR (l.link_type = 'phone' AND l.link_value = p_phone))
     ORDER BY CASE l.link_type WHEN 'contact_id' THEN 0 WHEN 'identifier' THEN 1 ELSE 2 END
     LIMIT 1
$$;

-- Moves of a contact's archive into its user's bucket: durable, so that the reconciler queues a
-- move again when its job was lost. One pending request per account and user.
CREATE TABLE IF NOT EXISTS rehome_requests (
    id bigserial PRIMARY KEY,
    chatwoot_account_id integer NOT NULL,
    user_id text NOT NULL REFERENCES user_bucket_mapping (user_id) ON DELETE CASCADE,
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done', 'error')),
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz,
    error_details text,
    messages_moved integer,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX IF NOT EXISTS rehome_requests_pending_idx
    ON rehome_requests (chatwoot_account_id, user_id) WHERE status = 'pending';
