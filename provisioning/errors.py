"""The exception tree of provisioning; every message names the object concerned."""


class ProvisioningError(Exception):
    """Base of provisioning errors."""


class NotFoundError(ProvisioningError):
    """A principal, device or assignment does not exist (or belongs to someone else)."""


class ConflictError(ProvisioningError):
    """The request contradicts what is stored (a duplicate, a device in the wrong state)."""


class InvalidInputError(ProvisioningError):
    """A value is malformed; the message names the field."""
