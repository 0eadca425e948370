"""One exception hierarchy for the whole package; the CLI maps each class to an exit code."""

from __future__ import annotations


class EdgeVerifyError(Exception):
    """Base class: every error meant for a user is one of these (one-line message)."""

    exit_code = 3


class UsageError(EdgeVerifyError):
    """The command line or an option is wrong."""

    exit_code = 2


class InputError(EdgeVerifyError):
    """An input (image, video, folder, pairs file, Keras model) is missing or unreadable."""

    exit_code = 4


class NoFaceError(InputError):
    """No face (or no usable face) was found where one was required."""

    exit_code = 5


class MultipleFacesError(InputError):
    """More than one face where exactly one is required (enroll, check)."""

    exit_code = 6


class QualityError(InputError):
    """Every frame was rejected by the quality gate (too small, blurred, dark...)."""

    exit_code = 7


class InconsistentEnrolmentError(InputError):
    """Enrolment frames do not all show the same person."""

    exit_code = 17


class AlreadyEnrolledError(UsageError):
    """The name is enrolled already and the enrolment did not ask to replace its template."""


class DuplicateIdentityError(UsageError):
    """A new enrolment matches an identity that is already enrolled (``--force`` to enrol anyway)."""

    exit_code = 18


class BundleError(EdgeVerifyError):
    """A model bundle is missing, corrupt, tampered with, or of the wrong kind."""

    exit_code = 8


class StoreError(EdgeVerifyError):
    """The template store cannot be opened, is corrupt, or a record failed authentication."""

    exit_code = 9


class TemplateIntegrityError(StoreError):
    """A stored template failed authentication (tampered, wrong key, moved identity)."""

    exit_code = 10


class InvalidTemplateError(StoreError):
    """A template is not a usable vector (size, NaN, norm): refused on write, skipped on read."""


class UnknownIdentityError(StoreError):
    """The named identity is not enrolled."""

    exit_code = 11


class FingerprintMismatchError(StoreError):
    """The template was made by another model bundle: the identity must be re-enrolled."""

    exit_code = 12


class SourceError(EdgeVerifyError):
    """A frame source (camera, stream, video) cannot be opened or stopped delivering frames."""

    exit_code = 13


class SourceUnavailableError(SourceError):
    """This kind of source cannot work on this machine (its library is not installed): waiting will not help."""


class BackendError(EdgeVerifyError):
    """No TFLite interpreter backend could be loaded, or the chosen one is unavailable."""

    exit_code = 14


class HostDependencyError(EdgeVerifyError):
    """A host-only command was run without the host extra (TensorFlow) installed."""

    exit_code = 15


class ModelError(EdgeVerifyError):
    """A Keras model is not usable as an embedding model, or an import failed."""

    exit_code = 16


class FleetError(EdgeVerifyError):
    """The fleet centre or the MQTT broker cannot be reached or refused (a revoked kiosk, wrong
    credentials), or a fleet file or authority key is unusable (edge_verify/fleet/)."""

    exit_code = 19
