"""Sign-in and sign-out are Django's own views (see bsepar_panel/urls.py) with our templates.

Axes (settings.AXES_*) refuses a locked-out sign-in before the view runs.
"""
