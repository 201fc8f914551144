"""The technician page's words in English and Italian, chosen by ``Accept-Language``.

One table per language, the same keys in both (a test checks it); values may carry
``{name}`` fields filled by :meth:`Words.__call__`. Device states use the shared vocabulary
(:class:`provisioner.orders.status.State`) as keys, so the page never invents a state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

LANGUAGES = ("en", "it")

EN: dict[str, str] = {
    "title": "Install appointment",
    "lang": "en",
    "login.title": "Open the appointment",
    "login.lead": "This link opens the install page of your appointment. It works once, on "
    "this device.",
    "login.button": "Start",
    "login.used": "This link was used already, or it expired. Ask for a new one.",
    "login.none": "Open the link (or scan the QR code) you were given for the appointment.",
    "logout": "Sign out",
    "orders.pick": "Your orders",
    "order.plan": "Plan",
    "order.cancelled": "This order is cancelled: nothing can be done on it.",
    "site": "Site",
    "live.on": "live",
    "live.off": "reconnecting...",
    "state.planned": "to install",
    "state.bound": "bound",
    "state.armed": "armed",
    "state.fetched": "configured",
    "state.refused": "refused",
    "state.blocked": "blocked",
    "state.pushing": "pushing",
    "state.verified": "verified",
    "state.failed": "failed",
    "detail.fetched": "got {file} at {when} from {source}",
    "detail.armed": "window open until {when}: switch it on",
    "detail.bound": "no window open: arm the order",
    "detail.planned": "scan or type the box's MAC",
    "detail.planned_serial": "type the box's serial",
    "detail.refused": "{count} refused, last at {when} from {source}",
    "detail.blocked": "address {source} blocked until {when}",
    "detail.verified": "pushed and verified at {when}",
    "detail.failed": "push failed at {when}: {error}",
    "detail.pushing": "a push is running",
    "resync.waiting": "resync sent at {when} ({outcome}): waiting for it to fetch again",
    "resync.refetched": "resync sent at {when} ({outcome}), fetched again at {fetched}",
    "port": "port {port} of {switch}",
    "slot": "slot",
    "bind.title": "Bind a box",
    "bind.mac": "MAC (scan or type)",
    "bind.mac_hint": "12 hex digits, e.g. 00:80:f0:12:34:56",
    "bind.mac_bad": "not a MAC: 12 hex digits, e.g. 00:80:f0:12:34:56",
    "bind.mac_ok": "MAC ok",
    "bind.to": "For",
    "bind.model": "Phone model (new phone)",
    "bind.button": "Bind",
    "bind.ext": "extension {short} {name} (new phone)",
    "scan": "Scan",
    "scan.stop": "Stop",
    "scan.none": "This browser cannot scan: type the MAC.",
    "arm.title": "Arm the order",
    "arm.minutes": "Minutes",
    "arm.button": "Arm",
    "arm.until": "Window open until {when}",
    "swap.title": "Swap (RMA)",
    "swap.new": "New box's MAC",
    "swap.button": "Swap",
    "unbind.button": "Unbind",
    "push.title": "Push",
    "push.address": "Address (IP:port)",
    "push.button": "Push",
    "push.dry": "Dry run (change nothing)",
    "push.job": "Push {job}",
    "push.done": "Push finished: {summary}",
    "block.title": "Blocked address",
    "block.text": "{source} is blocked until {when} (too many unknown names)",
    "block.button": "Unblock",
    "done.bound": "{device} bound to {mac}",
    "done.unbound": "{device} unbound",
    "done.swapped": "{device} now has {mac}",
    "done.armed": "Armed {count} devices until {when}",
    "done.resync": "{device}: resync {outcome}",
    "resync.button": "Re-fetch now (resync)",
    "done.pushed": "Push started",
    "done.unblocked": "{source} unblocked",
    "error": "Not done",
    "error.csrf": "This form is out of date: reload the page and try again.",
    "error.session": "Your session ended: open a new link.",
    "error.targets": "Give the address (IP:port) of at least one device to push.",
    "error.address": "{device}: {value} is not an IP:port address",
    "error.unblock": "{source} is not an address of this order's devices",
    "counts": "Devices",
}

IT: dict[str, str] = {
    "title": "Appuntamento di installazione",
    "lang": "it",
    "login.title": "Apri l'appuntamento",
    "login.lead": "Questo link apre la pagina del tuo appuntamento. Funziona una sola volta, su "
    "questo dispositivo.",
    "login.button": "Inizia",
    "login.used": "Questo link è già stato usato o è scaduto. Chiedine uno nuovo.",
    "login.none": "Apri il link (o inquadra il codice QR) ricevuto per l'appuntamento.",
    "logout": "Esci",
    "orders.pick": "I tuoi ordini",
    "order.plan": "Piano",
    "order.cancelled": "Questo ordine è annullato: non si può fare nulla.",
    "site": "Sede",
    "live.on": "in diretta",
    "live.off": "riconnessione...",
    "state.planned": "da installare",
    "state.bound": "associato",
    "state.armed": "abilitato",
    "state.fetched": "configurato",
    "state.refused": "rifiutato",
    "state.blocked": "bloccato",
    "state.pushing": "invio in corso",
    "state.verified": "verificato",
    "state.failed": "fallito",
    "detail.fetched": "ha scaricato {file} alle {when} da {source}",
    "detail.armed": "finestra aperta fino alle {when}: accendilo",
    "detail.bound": "nessuna finestra aperta: abilita l'ordine",
    "detail.planned": "inquadra o scrivi il MAC della scatola",
    "detail.planned_serial": "scrivi il numero di serie della scatola",
    "detail.refused": "{count} rifiutati, l'ultimo alle {when} da {source}",
    "detail.blocked": "indirizzo {source} bloccato fino alle {when}",
    "detail.verified": "configurato e verificato alle {when}",
    "detail.failed": "invio fallito alle {when}: {error}",
    "detail.pushing": "invio in corso",
    "resync.waiting": "resync inviato alle {when} ({outcome}): in attesa che riscarichi",
    "resync.refetched": "resync inviato alle {when} ({outcome}), riscaricato alle {fetched}",
    "port": "porta {port} di {switch}",
    "slot": "slot",
    "bind.title": "Associa una scatola",
    "bind.mac": "MAC (inquadra o scrivi)",
    "bind.mac_hint": "12 cifre esadecimali, es. 00:80:f0:12:34:56",
    "bind.mac_bad": "non è un MAC: 12 cifre esadecimali, es. 00:80:f0:12:34:56",
    "bind.mac_ok": "MAC valido",
    "bind.to": "Per",
    "bind.model": "Modello del telefono (nuovo telefono)",
    "bind.button": "Associa",
    "bind.ext": "interno {short} {name} (nuovo telefono)",
    "scan": "Inquadra",
    "scan.stop": "Ferma",
    "scan.none": "Questo browser non legge i codici: scrivi il MAC.",
    "arm.title": "Abilita l'ordine",
    "arm.minutes": "Minuti",
    "arm.button": "Abilita",
    "arm.until": "Finestra aperta fino alle {when}",
    "swap.title": "Sostituzione (RMA)",
    "swap.new": "MAC della nuova scatola",
    "swap.button": "Sostituisci",
    "unbind.button": "Dissocia",
    "push.title": "Configura",
    "push.address": "Indirizzo (IP:porta)",
    "push.button": "Configura",
    "push.dry": "Prova (non cambia nulla)",
    "push.job": "Invio {job}",
    "push.done": "Invio concluso: {summary}",
    "block.title": "Indirizzo bloccato",
    "block.text": "{source} è bloccato fino alle {when} (troppi nomi sconosciuti)",
    "block.button": "Sblocca",
    "done.bound": "{device} associato a {mac}",
    "done.unbound": "{device} dissociato",
    "done.swapped": "{device} ora ha {mac}",
    "done.armed": "Abilitati {count} dispositivi fino alle {when}",
    "done.resync": "{device}: resync {outcome}",
    "resync.button": "Riscarica ora (resync)",
    "done.pushed": "Invio avviato",
    "done.unblocked": "{source} sbloccato",
    "error": "Non fatto",
    "error.csrf": "Questo modulo è scaduto: ricarica la pagina e riprova.",
    "error.session": "La sessione è finita: apri un nuovo link.",
    "error.targets": "Indica l'indirizzo (IP:porta) di almeno un dispositivo da configurare.",
    "error.address": "{device}: {value} non è un indirizzo IP:porta",
    "error.unblock": "{source} non è un indirizzo dei dispositivi di questo ordine",
    "counts": "Dispositivi",
}

TABLES = {"en": EN, "it": IT}


def pick(accept_language: str) -> str:
    """The best of :data:`LANGUAGES` for an ``Accept-Language`` header (English otherwise)."""
    best, best_q = "en", -1.0
    for i, part in enumerate(accept_language.split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        lang = tag.strip().lower().split("-")[0]
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        q -= i * 1e-6  # equal weights: the first listed wins
        if lang in TABLES and q > best_q:
            best, best_q = lang, q
    return best


@dataclass(frozen=True)
class Words:
    """The page's words in one language: ``words("done.bound", device=..., mac=...)``."""

    lang: str

    def __call__(self, key: str, **fields: Any) -> str:
        text = TABLES[self.lang].get(key) or EN[key]
        return text.format(**fields) if fields else text
