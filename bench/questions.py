"""Questions asked the way people ask them, over the Python 3.11 documentation (python3.11-doc).

Each names the pages that answer it, as paths under the documentation root without a suffix
(`library/time` is both rst/library/time.txt and html/library/time.html). HELD_OUT is the measured
set: it was written before any measurement and nothing is tuned on it. TUNING is a separate, smaller
set that fusion weights and the like may be chosen on.
"""

from __future__ import annotations

HELD_OUT: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("make my script wait a little before it carries on", ("library/time", "library/asyncio-task")),
    ("keep a dictionary saved on disk between runs", ("library/shelve", "library/dbm", "library/pickle")),
    ("pick a random item out of a list", ("library/random", "library/secrets")),
    ("generate a password that is hard to guess", ("library/secrets",)),
    ("run another program and capture what it prints", ("library/subprocess",)),
    ("read the options someone typed after my script's name", ("library/argparse", "library/sys", "library/getopt")),
    ("find every file ending in .txt inside a folder and its subfolders", ("library/glob", "library/pathlib")),
    ("copy a whole directory tree somewhere else", ("library/shutil",)),
    ("turn my object into text I can send to a web page as JSON", ("library/json",)),
    ("how many days are there between two dates", ("library/datetime",)),
    ("convert a time from one country's clock to another's", ("library/zoneinfo", "library/datetime")),
    ("count how often each word shows up", ("library/collections",)),
    ("get the smallest few numbers out of a big list quickly", ("library/heapq",)),
    ("insert into a sorted list and keep it sorted", ("library/bisect",)),
    ("money calculations without rounding errors", ("library/decimal", "tutorial/floatingpoint")),
    ("why does 0.1 plus 0.2 not give exactly 0.3", ("tutorial/floatingpoint", "library/decimal")),
    ("do several downloads at the same time using threads", ("library/concurrent.futures", "library/threading")),
    ("use all my CPU cores for a heavy calculation", ("library/multiprocessing", "library/concurrent.futures")),
    ("stop two threads from changing the same variable at once", ("library/threading",)),
    ("write messages about what my program is doing to a file with timestamps", ("library/logging", "howto/logging")),
    ("check that my function returns the right answer automatically", ("library/unittest", "library/doctest")),
    (
        "replace a slow network call with a fake one in my tests",
        ("library/unittest.mock", "library/unittest.mock-examples"),
    ),
    ("find out which part of my code is slow", ("library/profile", "library/timeit")),
    ("measure how long a small piece of code takes to run", ("library/timeit",)),
    ("step through my program line by line to find a bug", ("library/pdb",)),
    ("see which lines use the most memory", ("library/tracemalloc",)),
    (
        "squash a file so it takes less space",
        ("library/gzip", "library/zlib", "library/bz2", "library/lzma", "library/zipfile"),
    ),
    (
        "pack several files into one archive and unpack it later",
        ("library/tarfile", "library/zipfile", "library/shutil"),
    ),
    ("read a spreadsheet exported as comma separated values", ("library/csv",)),
    ("read the settings file of my app in the ini style", ("library/configparser",)),
    ("store rows in a small database without running a server", ("library/sqlite3",)),
    ("send an email from my script", ("library/smtplib", "library/email", "library/email.examples")),
    ("download a web page's contents", ("library/urllib.request", "howto/urllib2")),
    ("split a web address into its host, path and query", ("library/urllib.parse",)),
    ("serve the files in the current folder over the web quickly", ("library/http.server",)),
    ("check whether a piece of text looks like an email address", ("library/re", "howto/regex")),
    (
        "make a fixed-size record of named fields that cannot be changed",
        ("library/collections", "library/typing", "library/dataclasses"),
    ),
    ("write a class that mostly just holds data without typing out __init__", ("library/dataclasses",)),
    ("give names to a fixed set of choices like colours", ("library/enum", "howto/enum")),
    ("say what type a function's arguments should be", ("library/typing",)),
    ("remember results of an expensive function so it is not computed twice", ("library/functools",)),
    (
        "make sure a file gets closed even when something goes wrong",
        ("reference/compound_stmts", "library/contextlib", "tutorial/inputoutput", "tutorial/errors"),
    ),
    ("handle an error so the program does not crash", ("tutorial/errors", "reference/compound_stmts")),
    ("all the ways to combine items from several lists", ("library/itertools",)),
    ("make a temporary file that is removed afterwards", ("library/tempfile",)),
    ("find the hash fingerprint of a download to check it", ("library/hashlib",)),
    ("isolate the packages of one project from another", ("library/venv", "tutorial/venv")),
    ("open a window with buttons", ("library/tkinter", "library/tkinter.ttk", "library/tk")),
    ("draw pictures by moving a little pen around the screen", ("library/turtle",)),
    ("print nested data so it is easy to read", ("library/pprint", "library/json")),
    ("find out the average and the middle value of some numbers", ("library/statistics",)),
    ("run code when my program is about to exit", ("library/atexit",)),
)

TUNING: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("compare two texts and show what changed", ("library/difflib",)),
    ("copy an object together with everything inside it", ("library/copy",)),
    ("the number of seconds since my program started, for timing", ("library/time",)),
    ("wrap long lines of text to fit a width", ("library/textwrap",)),
    ("work out the square root and the sine of a number", ("library/math", "library/cmath")),
    ("a queue that several threads can share safely", ("library/queue",)),
    ("save python objects into a byte string and load them back", ("library/pickle",)),
    ("read a file in the toml format", ("library/tomllib",)),
    ("know whether an address is in a given network range", ("library/ipaddress",)),
    ("a unique identifier for each record", ("library/uuid",)),
    ("encode binary data as plain text letters", ("library/base64", "library/binascii")),
    ("walk through the folders and list the files in each", ("library/os", "library/pathlib")),
)
