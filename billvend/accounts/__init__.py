"""Users, server-side sessions, remember tokens, two-factor, the admin audit trail."""
