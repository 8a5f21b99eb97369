"""The learned gate (TWN + ReMix): picks role adapter(s) and the think or direct path per request.

Not built yet; until it is, `model: auto` is refused with a 400 that names the roles.
"""
