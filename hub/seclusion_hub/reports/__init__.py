"""Written reports from the hub's records: the parents' written copy and the governors' termly report.

Both are rendered from plain, already-decided figures to HTML (Jinja2, autoescaped) and to PDF
(WeasyPrint, from the same HTML). See docs/parent-copy.md.
"""

from .governors import (
    Count,
    GovernorsReport,
    render_governors_html,
    render_governors_pdf,
)
from .parent_copy import ParentCopy, StaffMember, render_html, render_pdf

__all__ = [
    "Count",
    "GovernorsReport",
    "ParentCopy",
    "StaffMember",
    "render_governors_html",
    "render_governors_pdf",
    "render_html",
    "render_pdf",
]
