"""LTI 1.3 / LTI Advantage: the only app that speaks LTI.

It validates launches (pylti1p3 through django-lti, plus the 1EdTech Security
Framework checks those leave to the tool), serves the tool's JWKS, OIDC login,
Deep Linking, Dynamic Registration and the Canvas JSON configuration, and hands
each validated launch to `tutor.services.course_enter` as plain values.
"""
