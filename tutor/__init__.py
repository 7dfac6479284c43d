"""The tutoring app: courses, placements, memberships, and (later) conversations and review.

It is also the Django project package (settings, root URLs, ASGI/WSGI).
"""
