-- Token scopes: the deployments, models and log services a token may name ('deployments/web',
-- 'models/chat-large', 'services/checkout'); empty for a token that may name any (as before).
ALTER TABLE api_tokens ADD COLUMN scopes text[] NOT NULL DEFAULT '{}';
