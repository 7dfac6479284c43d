"""Deep Linking content items as LMSs read them."""

from __future__ import annotations

from pylti1p3.deep_link_resource import DeepLinkResource


class TutorLinkResource(DeepLinkResource):
    """An ltiResourceLink content item without empty members.

    pylti1p3 always sends `custom`, as `{}` when there are no custom parameters. Moodle 4.5
    decodes the response JWT into PHP arrays and encodes it again, so `{}` reaches
    mod/lti/contentitem_return.php as `[]`, params_to_string(object) fails, and no activity is
    created. The spec makes `custom` optional: an empty one (or a null) is left out.
    """

    def to_dict(self) -> dict[str, object]:
        return {key: value for key, value in super().to_dict().items() if value is not None and value != {}}
