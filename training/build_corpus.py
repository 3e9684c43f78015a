#!/usr/bin/env python3
"""Build the byte-level training corpus from installed Debian packages only.

Sources
  * fortune collections: fortunes (en), fortunes-de, fortunes-es, fortunes-it,
    fortunes-ru, fortunes-zh  -> one fortune (entry between `%` lines) = one document
  * bible-kjv(-text): decoded with the packaged `bible` program, one chapter = one
    document, capped at a limited share of the corpus (--bible-share) so it does
    not dominate.

Processing
  * `.dat` index files are skipped; `.u8` names and symlinks are resolved so every
    physical file is read once; directories named `off` (the "offensive" sets)
    are skipped.
  * bytes are decoded as UTF-8 when valid, otherwise the encoding is detected
    (KOI8-R / CP1251 for Russian, GB18030 for Chinese, Latin-1 otherwise).
  * ANSI colour escapes and backspace overstriking are removed, text is NFC
    normalised, trailing whitespace stripped.
  * exact duplicates (after whitespace collapsing) are removed.
  * deterministic split by SHA-1 of the document: --val-permille of the hash
    space goes to validation (default 30 = 3 %).

Output: training/data/train.txt and training/data/val.txt, documents written in
fortune format (text, then a line containing only `%`).
"""
import argparse
import collections
import hashlib
import os
import re
import shutil
import subprocess
import sys
import unicodedata

FORTUNE_ROOTS = ["/usr/share/games/fortunes", "/usr/share/games/fortunes-de"]
ZH_FILES = {"chinese", "tang300", "song100"}  # files of the fortunes-zh package
ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
CTRL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
CYRILLIC_LOWER = set("абвгдеёжзийклмнопрстуфхцчшщъыьэюя")


def lang_of(path):
    rel = os.path.relpath(path, "/usr/share/games")
    parts = rel.split(os.sep)
    for p in parts[1:-1]:
        if p in ("de", "es", "it", "ru"):
            return p
    if parts[0] == "fortunes-de":
        return "de"
    if parts[-1] in ZH_FILES:
        return "zh"
    return "en"


def score_ru(text):
    # good decoding of Russian text: many lowercase cyrillic letters
    return sum(1 for ch in text if ch in CYRILLIC_LOWER)


def decode(raw, lang):
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    if lang == "ru":
        cands = []
        for enc in ("koi8-r", "cp1251"):
            t = raw.decode(enc, errors="replace")
            cands.append((score_ru(t), enc, t))
        cands.sort(reverse=True)
        return cands[0][2], cands[0][1]
    if lang == "zh":
        return raw.decode("gb18030", errors="replace"), "gb18030"
    try:
        return raw.decode("cp1252"), "cp1252"
    except UnicodeDecodeError:
        return raw.decode("latin-1"), "latin-1"


def clean(text):
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = ANSI_RE.sub("", text)
    # overstriking: "X\bY" prints Y over X; keep the last character
    while "\b" in text:
        new = re.sub(r"[^\n\b]\x08", "", text)
        if new == text:
            text = text.replace("\b", "")
            break
        text = new
    text = CTRL_RE.sub("", text)
    text = unicodedata.normalize("NFC", text)
    lines = [ln.rstrip() for ln in text.split("\n")]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines)


def fortune_files():
    seen = set()
    for root in FORTUNE_ROOTS:
        if not os.path.isdir(root):
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d != "off")
            for fn in sorted(filenames):
                if fn.endswith(".dat"):
                    continue
                p = os.path.realpath(os.path.join(dirpath, fn))
                if "/off/" in p or p in seen or not os.path.isfile(p):
                    continue
                seen.add(p)
                yield p


def fortune_docs(stats):
    for path in fortune_files():
        lang = lang_of(path)
        with open(path, "rb") as f:
            raw = f.read()
        text, enc = decode(raw, lang)
        stats["encodings"][enc] += 1
        entries = re.split(r"\n%[ \t]*\n", "\n" + text.replace("\r\n", "\n") + "\n")
        for e in entries:
            doc = clean(e)
            if doc and doc != "%":
                yield lang, "fortunes-" + lang if lang != "en" else "fortunes", doc


def bible_chapters():
    exe = shutil.which("bible") or "/usr/bin/bible"
    if not os.path.exists(exe):
        return []
    out = subprocess.run([exe, "-f", "gen1:1-rev22:21"], stdin=subprocess.DEVNULL,
                         capture_output=True, check=True).stdout.decode("utf-8", "replace")
    chapters = collections.OrderedDict()
    for line in out.split("\n"):
        m = re.match(r"^(\w+?)(\d+):(\d+) (.*)$", line)
        if not m:
            continue
        book, ch, verse, body = m.groups()
        chapters.setdefault((book, ch), []).append(f"{verse} {body.strip()}")
    return [clean(f"{b} {c}\n" + "\n".join(v)) for (b, c), v in chapters.items()]


def sha1(s):
    return hashlib.sha1(s.encode("utf-8")).hexdigest()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "data"))
    ap.add_argument("--val-permille", type=int, default=30)
    ap.add_argument("--bible-share", type=float, default=0.08,
                    help="max fraction of total corpus bytes taken by the KJV bible (0 = none)")
    args = ap.parse_args()

    stats = {"encodings": collections.Counter()}
    docs = {}  # dedupe key -> (lang, source, text)
    n_raw = 0
    for lang, src, doc in fortune_docs(stats):
        n_raw += 1
        key = " ".join(doc.split())
        docs.setdefault(key, (lang, src, doc))
    n_fortune_bytes = sum(len(d[2].encode()) + 3 for d in docs.values())

    if args.bible_share > 0:
        chapters = bible_chapters()
        budget = args.bible_share / (1 - args.bible_share) * n_fortune_bytes
        used = 0
        for ch in sorted(chapters, key=sha1):  # deterministic pseudo-random choice
            b = len(ch.encode()) + 3
            if used + b > budget:
                continue
            used += b
            n_raw += 1
            docs.setdefault(" ".join(ch.split()), ("en", "bible-kjv", ch))

    os.makedirs(args.out, exist_ok=True)
    by_split = {"train": [], "val": []}
    for key, (lang, src, doc) in docs.items():
        h = sha1(doc)
        split = "val" if int(h[:8], 16) % 1000 < args.val_permille else "train"
        by_split[split].append((h, lang, src, doc))

    table = collections.defaultdict(lambda: collections.Counter())
    for split, items in by_split.items():
        items.sort()  # order by hash: languages and sources are interleaved
        with open(os.path.join(args.out, f"{split}.txt"), "w", encoding="utf-8", newline="\n") as f:
            for h, lang, src, doc in items:
                f.write(doc + "\n%\n")
                nb = len(doc.encode("utf-8")) + 3
                table[(split, "lang")][lang] += nb
                table[(split, "src")][src] += nb
                table[(split, "docs")][lang] += 1

    print(f"raw documents {n_raw}, after dedupe {len(docs)}")
    print(f"file encodings: {dict(stats['encodings'])}")
    for split in ("train", "val"):
        tot = sum(table[(split, 'lang')].values())
        nd = sum(table[(split, 'docs')].values())
        print(f"\n[{split}] {nd} documents, {tot} bytes")
        print("  bytes per language:")
        for k, v in sorted(table[(split, "lang")].items(), key=lambda kv: -kv[1]):
            print(f"    {k:4s} {v:10d}  {100 * v / tot:5.1f}%  docs {table[(split, 'docs')][k]}")
        print("  bytes per source:")
        for k, v in sorted(table[(split, "src")].items(), key=lambda kv: -kv[1]):
            print(f"    {k:14s} {v:10d}  {100 * v / tot:5.1f}%")
    nv = len(by_split["val"]); nt = len(by_split["train"])
    print(f"\nvalidation share: {100 * nv / (nv + nt):.2f}% of documents")
    assert nv / (nv + nt) >= 0.02, "validation split smaller than 2 %"


if __name__ == "__main__":
    sys.exit(main())
