-- Prompt tokens written to the provider's prompt cache (Anthropic's cache_creation_input_tokens),
-- charged at their own price. Added in place: a constant default makes this a catalogue change
-- on every partition (no table rewrite), and rows written before it read 0.
ALTER TABLE gateway_ledger ADD COLUMN IF NOT EXISTS cache_write_tokens integer NOT NULL DEFAULT 0;
