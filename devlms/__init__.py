"""Development LMS: a small LTI 1.3 platform for the demo and the tests.

Only installed when DEVLMS_ENABLED (default: DJANGO_DEBUG). It has its own RSA
key pair and JWKS, registers itself with the tool through the same service as
`lti_add_platform`, and launches the tool as a student, teacher or admin of a
sample course through the real OIDC flow with real signed JWTs. Open
http://127.0.0.1:8000/devlms/ after `./run demo`.
"""
