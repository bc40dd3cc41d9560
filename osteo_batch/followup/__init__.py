"""After the worklist: what happened to the women on it, and what keeps a woman off it.

:mod:`.dxa` (the DXA table users bring), :mod:`.conditions` (known
osteoporosis or treatment), :mod:`.exclusions` (who is not listed, and why),
:mod:`.referrals` (coordinators' actions, append-only), :mod:`.outcomes`
(flags matched to later DXA), :mod:`.program` (the monthly program report).
"""
