"""How the API's authentication appears in the OpenAPI schema (drf-spectacular extensions)."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class LaunchTokenScheme(OpenApiAuthenticationExtension):
    target_class = "tutor.auth.LaunchTokenAuthentication"
    name = "launchToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "The short-lived launch token the tutor page receives after an LTI launch.",
        }


class LaunchSessionScheme(OpenApiAuthenticationExtension):
    target_class = "tutor.auth.LaunchSessionAuthentication"
    name = "launchSession"

    def get_security_definition(self, auto_schema):
        return {"type": "apiKey", "in": "cookie", "name": "sessionid", "description": "The launched browser session."}
