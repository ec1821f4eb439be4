"""Which categories a customer's request acts on, by its reason, as the GDPR scopes each right.

- ``erasure_request`` (Art. 17): every category; what the law keeps stays (``keep_until_due``).
- ``consent_withdrawn`` (Art. 7(3), Art. 17(1)(b)): only what is processed under consent.
- ``objection`` (Art. 21): what is processed under legitimate interests (Art. 21(1)) and all
  direct marketing, whatever its basis (Art. 21(2)-(3)).

Data kept under a contract or a legal obligation is not affected by a withdrawal or an
objection: the receipt lists such categories as untouched, with why, in Danish and English.
"""

from __future__ import annotations

from retention.policy import Policy, Texts

BASIS_WORDS: dict[str, Texts] = {
    "consent": Texts(da="samtykke", en="consent"),
    "contract": Texts(da="en kontrakt", en="a contract"),
    "legal_obligation": Texts(da="en retlig forpligtelse", en="a legal obligation"),
    "vital_interests": Texts(da="vitale interesser", en="vital interests"),
    "public_task": Texts(da="en opgave i samfundets interesse", en="a task in the public interest"),
    "legitimate_interests": Texts(da="legitime interesser", en="legitimate interests"),
}
"""``legal_basis.basis`` in words: "behandles på grundlag af ..." / "processed under ..."."""


def in_scope(policy: Policy, reason: str) -> bool:
    """Whether a request with ``reason`` acts on ``policy``'s category at all."""
    basis = policy.legal_basis.basis
    if reason == "consent_withdrawn":
        return basis == "consent"
    if reason == "objection":
        return basis == "legitimate_interests" or policy.direct_marketing
    return True


def why_untouched(policy: Policy, reason: str) -> Texts | None:
    """Why a request with ``reason`` leaves the category alone (None: it acts on it)."""
    if in_scope(policy, reason):
        return None
    words = BASIS_WORDS[policy.legal_basis.basis]
    if reason == "consent_withdrawn":
        return Texts(
            da=f"behandles på grundlag af {words.da}, ikke samtykke: berøres ikke af, at samtykket "
            "trækkes tilbage",
            en=f"processed under {words.en}, not consent: not affected by withdrawing consent",
        )
    return Texts(
        da=f"behandles på grundlag af {words.da}, ikke legitime interesser, og ikke til direkte "
        "markedsføring: berøres ikke af en indsigelse",
        en=f"processed under {words.en}, not legitimate interests, and not for direct marketing: "
        "not affected by an objection",
    )
