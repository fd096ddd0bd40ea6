"""The small corpus `scripts/compat` syncs: real Markdown, HTML, PDF and DOCX files, each on its own
topic so that a search for its query lands in it."""

from __future__ import annotations

from pathlib import Path

from bench.compat_checks import Doc
from tests.docs import make_docx, make_pdf

GUIDE_V1 = """# Onboarding guide

New employees request a laptop through the service desk on their first day. The laptop comes with
email, the calendar and the VPN client already set up. Desks are booked in the room planner; the
third floor is kept for teams that meet in person on Tuesdays.

## Accounts

Your account is created by the people team one week before you start. Change the first password
within a day; the service desk resets it if you are locked out.
"""

GUIDE_V2_TEXT = """# Onboarding guide (revised)

From this quarter, new employees collect a tablet instead of a laptop at the reception desk, and
the parking permit is issued with the badge. Bicycle racks are in the north courtyard; showers and
lockers are next to them.

## Accounts

Accounts are created on the first morning at the welcome session, together with the badge photo.
"""

RECIPES = """# Sourdough bread

Feed the sourdough starter the evening before: equal weights of rye flour and water. In the morning
mix 500 g of wheat flour, 350 g of water, 100 g of active starter and 10 g of salt. Fold the dough
four times during the first two hours, shape it, proof it overnight in the fridge and bake it in a
covered cast-iron pot at 250 °C for twenty minutes, then uncovered until the crust is dark.
"""

MINUTES = """# Minutes of the garden committee

The committee agreed to plant tomatoes and courgettes in the raised beds, to repair the rainwater
barrel and to buy a new compost bin. The watering rota for August is on the shed door.
"""

HOLIDAYS = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>Public holidays and vacation allowance</title>
<style>body { font-family: sans-serif; } nav a { margin-right: 1em; }</style></head>
<body>
<nav><a href="/">Home</a><a href="/hr">HR</a></nav>
<h1>Public holidays and vacation allowance</h1>
<p>Every employee has 28 days of paid vacation a year, plus the public holidays of the office's
region. Unused vacation days carry over until the end of March of the next year.</p>
<p>Book vacation in the leave planner at least two weeks ahead; your manager approves it.</p>
</body>
</html>
"""

ANNUAL_REPORT = [
    "Annual report 2025\n\nRevenue grew by twelve percent to 48 million euros, driven by the new solar\n"
    "farm in the south and the battery storage contracts with two regional utilities.",
    "Outlook\n\nThe board expects the wind park extension to be connected to the grid in the\n"
    "second half of next year; the dividend stays at 1.20 euros a share.",
]

SAFETY_MEMO = [
    "Memo: fire safety drills",
    "The next fire drill is on the first Monday of the month at 10:00. Leave by the nearest staircase,",
    "never by the lift, and gather at the assembly point in the car park.",
    "Fire wardens wear yellow vests and count the people of their floor.",
]

# path → (a query its text answers, a word its search hits must show)
DOCS = {
    "guide.md": Doc("guide.md", "how do new employees get a laptop and book a desk", "laptop"),
    "web/holidays.html": Doc("web/holidays.html", "how many vacation days do employees get", "vacation"),
    "reports/annual-report.pdf": Doc(
        "reports/annual-report.pdf", "how much did revenue grow with the solar farm", "solar"
    ),
    "reports/safety-memo.docx": Doc(
        "reports/safety-memo.docx", "where to gather during a fire drill", "assembly point"
    ),
    "notes/recipes.md": Doc("notes/recipes.md", "how to bake sourdough bread with a starter", "sourdough"),
    "notes/minutes.md": Doc("notes/minutes.md", "what will the garden committee plant", "compost"),
}
GUIDE_V2 = Doc("guide.md", "where do new employees collect a tablet and a parking permit", "tablet")
RENAMED = ("notes/recipes.md", "kitchen/sourdough.md")
DELETED = "notes/minutes.md"
EDITED = "guide.md"

OUTAGE_TOPICS = [
    "lighthouse keepers",
    "beekeeping in winter",
    "tram maintenance",
    "orchard pruning",
    "ferry timetables",
    "mountain huts",
    "violin repair",
    "glacier research",
    "paper recycling",
    "night trains",
]


def write_corpus(root: Path) -> dict[str, Doc]:
    """The first state: Markdown, HTML, PDF and DOCX."""
    for folder in ("web", "reports", "notes"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    (root / "guide.md").write_text(GUIDE_V1)
    (root / "web/holidays.html").write_text(HOLIDAYS)
    make_pdf(root / "reports/annual-report.pdf", ANNUAL_REPORT)
    make_docx(
        root / "reports/safety-memo.docx",
        SAFETY_MEMO,
        table=[["Floor", "Warden"], ["1", "A. Jensen"], ["2", "M. Okafor"]],
    )
    (root / "notes/recipes.md").write_text(RECIPES)
    (root / "notes/minutes.md").write_text(MINUTES)
    return dict(DOCS)


def outage_files(root: Path) -> dict[str, Doc]:
    """Ten new Markdown files of about 30 KB each (≈ 0.6 s of embedding each on 2 cores): enough work
    that the embedder can be stopped while the sync is still attaching."""
    (root / "outage").mkdir(exist_ok=True)
    queries = {}
    for n, topic in enumerate(OUTAGE_TOPICS):
        path = f"outage/{topic.replace(' ', '-')}.md"
        body = "\n\n".join(
            f"Section {s} about {topic}: notes number {s} on {topic}, written for the archive of the "
            f"{topic} society, volume {n}, with the details that members asked for at the last meeting."
            for s in range(150)
        )
        (root / path).write_text(f"# {topic.title()}\n\n{body}\n")
        queries[path] = Doc(path, f"notes on {topic}", topic)
    return queries
