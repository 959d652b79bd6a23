"""The secure profile's secrets: the project's CA, Mosquitto users and ACLs, the API token.

:mod:`.ca` makes the certificates, :mod:`.mosquitto` the broker's users, ACL, password file
and TLS listener, :mod:`.layout` the secrets directory ``iiotbed certs`` writes and the
other commands read. ``docs/security.md`` maps each control to the zone it protects.
"""

from iiotbed.security.ca import CertificateAuthority, IssuedCertificate
from iiotbed.security.layout import DEFAULT_DIR, SecretsDir, generate, read_api_token
from iiotbed.security.mosquitto import User, acl_text, count_denied, testbed_users

__all__ = [
    "DEFAULT_DIR",
    "CertificateAuthority",
    "IssuedCertificate",
    "SecretsDir",
    "User",
    "acl_text",
    "count_denied",
    "generate",
    "read_api_token",
    "testbed_users",
]
