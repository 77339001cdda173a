"""What the API accepts as an identifier (shopper, session, item) and as a request context value
(country, device, referrer), for every route alike. Identifiers allow no braces, so a shopper's Redis
hash tag `{u:<id>}` never ends early."""

from __future__ import annotations

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@\-]{0,127}$"
CONTEXT_PATTERN = r"^[\w .,'()\-/&]{1,64}$"
