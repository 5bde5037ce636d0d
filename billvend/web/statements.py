"""Statements and receipts customers can keep: CSV and PDF statements of the
wallet, and a PDF receipt of one payment (proof of payment).

PDFs are drawn with fpdf2 (pure Python, installed from PyPI only: no system
libraries). Its built-in fonts are Latin-1, which has no naira sign, so PDFs
write amounts as ``NGN 1,500.00``.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import datetime
from typing import Iterable, Optional

from fpdf import FPDF

from billvend.ledger.models import LedgerEntry
from billvend.vending.models import Payment, group_digits
from billvend.platform.money import format_naira, kobo_to_naira_input
from billvend.vending.providers import DISCOS

#: What a customer calls each payment status (the badges say the same).
CUSTOMER_STATUS = {
    "pending": "Queued",
    "vending": "Contacting the disco",
    "unknown": "Waiting for the disco",
    "successful": "Token issued",
    "failed": "Failed, refund on the way",
    "reversed": "Refunded",
}
KIND_WORDS = {"funding": "Wallet funding", "bill_payment": "Electricity",
              "reversal": "Refund", "adjustment": "Balance correction by billvend",
              "bonus": "Goodwill credit from billvend", "p2p": "Transfer"}
#: Kinds whose transfer carries the customer's words in ``description`` (an approved
#: adjustment: "Goodwill credit from billvend", "Balance correction by billvend").
DESCRIBED_KINDS = ("adjustment", "bonus")
CSV_COLUMNS = ["Date (Lagos)", "Description", "Disco", "Meter", "Meter name", "Name on meter",
               "Reference", "Token", "Units (kWh)", "Status", "Amount (NGN)", "Balance after (NGN)"]


def customer_status(payment: Payment) -> str:
    """A payment's status in the customer's words (postpaid success: "Paid")."""
    if payment.status == "successful" and not payment.token and payment.meter_type != "prepaid":
        return "Paid"
    return CUSTOMER_STATUS.get(payment.status, payment.status)


@dataclass
class StatementRow:
    created_at: datetime
    description: str
    disco: str
    meter_number: str
    meter_label: str
    customer_name: str
    reference: str
    token: str
    units_kwh: str
    status: str
    delta_kobo: int
    balance_after_kobo: int


def statement_rows(entries: Iterable[LedgerEntry],
                   labels: Optional[dict[tuple[str, str], str]] = None) -> list[StatementRow]:
    """Ledger entries (with transfer and payment loaded) as statement rows.

    :param labels: ``{(service_id, meter_number): nickname}`` of saved meters.
    """
    labels = labels or {}
    rows = []
    for entry in entries:
        transfer = entry.transfer
        payment = transfer.payment
        words = KIND_WORDS.get(transfer.kind, transfer.kind)
        if transfer.kind in DESCRIBED_KINDS and transfer.description:
            words = transfer.description
        row = StatementRow(entry.created_at, words, "", "", "",
                           "", "", "", "", "", entry.delta_kobo, entry.balance_after_kobo)
        if payment is not None:
            row.disco = DISCOS.get(payment.service_id, payment.service_id)
            row.meter_number = payment.meter_number
            row.meter_label = labels.get((payment.service_id, payment.meter_number), "")
            row.customer_name = payment.customer_name or ""
            row.reference = payment.reference
            # A proof reported on a failed or refunded payment is for admins.
            row.token = (group_digits(payment.token) or "") if payment.shows_delivery else ""
            row.units_kwh = (payment.units_kwh or "") if payment.shows_delivery else ""
            row.status = customer_status(payment)
        elif transfer.funding is not None:
            row.reference = transfer.funding.reference
        elif transfer.p2p_transfer is not None:
            _describe_p2p(row, transfer.p2p_transfer, sent=entry.delta_kobo < 0)
        rows.append(row)
    return rows


def _describe_p2p(row: StatementRow, transfer, *, sent: bool) -> None:
    """A transfer between customers' row: "Transfer to Ada O." (the sender's
    side) or "Transfer from Bola A." (the recipient's), with its note."""
    who = transfer.recipient_name if sent else transfer.sender_name
    row.description = f"Transfer {'to' if sent else 'from'} {who}"
    if transfer.note:
        row.description += f": {transfer.note}"
    row.reference = transfer.reference


#: A cell starting with one of these is read as a formula by spreadsheets
#: (OWASP, "CSV Injection").
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value) -> str:
    """Text from outside (a customer name from the provider, a nickname, an
    email) made safe for a CSV cell: ``None`` -> ``""``, and a leading
    ``'`` when it would start a spreadsheet formula (CSV injection)."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def statement_csv(rows: list[StatementRow]) -> str:
    """The statement as CSV text (one header row; amounts as plain naira)."""
    from billvend.vending.lifecycle import LAGOS

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow([
            row.created_at.astimezone(LAGOS).strftime("%Y-%m-%d %H:%M"), row.description, row.disco,
            row.meter_number, csv_safe(row.meter_label), csv_safe(row.customer_name), row.reference,
            row.token, row.units_kwh, row.status,
            kobo_to_naira_input(row.delta_kobo), kobo_to_naira_input(row.balance_after_kobo),
        ])
    return buffer.getvalue()


def _ngn(amount_kobo: int, signed: bool = False) -> str:
    """``format_naira`` for a Latin-1 PDF font: ``NGN 1,500.00``."""
    text = format_naira(abs(amount_kobo)).replace("₦", "NGN ")
    if amount_kobo < 0:
        return "-" + text
    return ("+" + text) if signed and amount_kobo > 0 else text


def _latin1(text: str) -> str:
    return text.replace("₦", "NGN ").replace("·", "-").encode("latin-1", "replace").decode("latin-1")


class _Document(FPDF):
    def __init__(self, title: str):
        super().__init__(format="A4")
        self.doc_title = title
        self.set_auto_page_break(auto=True, margin=15)
        self.set_title(title)
        self.set_author("billvend")

    def header(self):
        self.set_font("Helvetica", "B", 16)
        self.set_text_color(10, 106, 57)
        self.cell(0, 9, "billvend", new_x="LMARGIN", new_y="NEXT")
        self.set_text_color(23, 32, 43)
        self.set_font("Helvetica", "B", 12)
        self.cell(0, 7, _latin1(self.doc_title), new_x="LMARGIN", new_y="NEXT")
        self.ln(2)

    def footer(self):
        self.set_y(-12)
        self.set_font("Helvetica", "", 8)
        self.set_text_color(74, 85, 102)
        self.cell(0, 5, f"Page {self.page_no()}/{{nb}}", align="C")


def statement_pdf(rows: list[StatementRow], *, owner: str, period: str) -> bytes:
    """The statement as a PDF: one line per entry, newest first.

    :param owner: the customer's name or email, printed on top.
    :param period: the filters in words ("All dates", "1 Dec 2026 to 31 Dec 2026").
    """
    from billvend.vending.lifecycle import LAGOS

    pdf = _Document("Wallet statement")
    pdf.add_page()
    pdf.set_font("Helvetica", "", 9)
    pdf.cell(0, 5, _latin1(f"Customer: {owner}"), new_x="LMARGIN", new_y="NEXT")
    pdf.cell(0, 5, _latin1(f"Period: {period}"), new_x="LMARGIN", new_y="NEXT")
    pdf.cell(0, 5, f"Generated: {datetime.now(LAGOS):%d %b %Y, %H:%M} (Lagos)", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(3)
    pdf.set_font("Helvetica", "", 8)
    with pdf.table(col_widths=(22, 60, 44, 30, 30),
                   text_align=("LEFT", "LEFT", "LEFT", "RIGHT", "RIGHT")) as table:
        table.row(["Date", "Description", "Reference / token", "Amount", "Balance"])
        for row in rows:
            what = row.description
            if row.meter_number:
                what += f" - {row.disco}, meter {row.meter_number}"
                if row.meter_label or row.customer_name:
                    what += f" ({row.meter_label or row.customer_name})"
                if row.status:
                    what += f" - {row.status}"
            proof = row.reference + (f"\nToken {row.token}" if row.token else "")
            table.row([row.created_at.astimezone(LAGOS).strftime("%d %b %Y %H:%M"), _latin1(what),
                       _latin1(proof), _ngn(row.delta_kobo, signed=True), _ngn(row.balance_after_kobo)])
    if not rows:
        pdf.cell(0, 8, "No entries for this period.", new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


def receipt_pdf(payment: Payment, disco_name: str) -> bytes:
    """One payment's receipt as a PDF (proof of payment): amount, token (and
    key-change tokens), units, the disco's reference, the meter and its name."""
    from billvend.vending.lifecycle import LAGOS

    pdf = _Document("Electricity receipt")
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 20)
    pdf.cell(0, 11, _ngn(payment.amount_kobo), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 10)
    pdf.cell(0, 6, _latin1(f"Status: {customer_status(payment)}"), new_x="LMARGIN", new_y="NEXT")
    delivered = payment.shows_delivery  # a late proof on a failed or refunded one: admins only
    if delivered and payment.token:
        pdf.ln(2)
        pdf.set_font("Helvetica", "", 10)
        pdf.cell(0, 6, "Token", new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Courier", "B", 18)
        pdf.cell(0, 10, payment.token_groups, new_x="LMARGIN", new_y="NEXT")
        for number, kct in enumerate(payment.kct_groups, 1):
            pdf.set_font("Courier", "", 11)
            pdf.cell(0, 6, f"Key-change token {number}: {kct}", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(3)
    details = [
        ("Units", f"{payment.units_kwh} kWh" if delivered and payment.units_kwh else None),
        ("Tariff", payment.tariff),
        ("Debt deducted", _ngn(payment.debt_kobo) if payment.debt_kobo else None),
        ("Fee", "No fee"),
        ("Disco reference", (payment.exchange_reference or payment.receipt_reference) if delivered else None),
        ("Disco", disco_name),
        ("Meter", f"{payment.meter_number} ({payment.meter_type})"),
        ("Name on meter", payment.customer_name),
        ("Address", payment.customer_address),
        ("Phone", payment.phone),
        ("Reference", payment.reference),
        ("Paid on", f"{payment.created_at.astimezone(LAGOS):%d %b %Y, %H:%M} (Lagos)"),
        ("Completed", f"{payment.finalized_at.astimezone(LAGOS):%d %b %Y, %H:%M} (Lagos)"
         if payment.finalized_at else None),
    ]
    pdf.set_font("Helvetica", "", 10)
    with pdf.table(col_widths=(45, 135), first_row_as_headings=False) as table:
        for label, value in details:
            if value:
                table.row([label, _latin1(str(value))])
    if payment.status == "reversed":
        pdf.ln(3)
        pdf.multi_cell(0, 6, _latin1(f"This purchase failed at the disco and {_ngn(payment.amount_kobo)} "
                                     "was refunded to the billvend wallet."))
    return bytes(pdf.output())
