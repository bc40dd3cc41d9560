"""Where images come from, and which are screened: the archive into the ``instances`` index.

:mod:`.walk` lists the archive (every regular file once, nothing outside its
roots opened), :mod:`.sweep` reads the new and changed headers into
``instances``, and :mod:`.eligibility` applies the declarative selection
rules (who is screened).
"""
