"""Tokens of a realistic news page before and after HTML extraction (documents/html.py).

Builds, offline, a ~27 kB article page as a news site serves it: a head full of meta tags, inline CSS and
scripts (analytics, JSON-LD), a banner with an SVG logo and a navigation menu, breadcrumbs, the article (headings,
paragraphs, a list, a table, a figure), a sidebar, a newsletter form, a footer of links and a cookie dialog. Then
counts the cl100k tokens of the raw page, of its visible text with the site's navigation, banner, footer and
sidebar kept, and of the text longlm reads from it (those left out).

    python benchmarks/formats.py            # prints the sizes and token counts
    python benchmarks/formats.py --write page.html   # also saves the page, e.g. for `longlm plan --file page.html`
"""

from __future__ import annotations

import argparse
import base64
import json
import pathlib
import random
import sys

from longlm_cli.documents import read_documents
from longlm_cli.documents.html import parse_html
from longlm_cli.documents.htmlrender import render
from longlm_cli.models.tokens import count_tokens

SECTIONS = ["World", "Business", "Technology", "Science", "Climate", "Cities", "Culture", "Sport", "Opinion"]
SUBSECTIONS = ["Transport", "Housing", "Planning", "Energy", "Water", "Public health", "Local politics", "Data"]
FOOTER = [
    "About us", "Contact", "Careers", "Advertise", "Privacy policy", "Cookie settings", "Terms of use",
    "Accessibility", "Corrections", "Ethics code", "Newsletters", "Podcasts", "Events", "Archive", "RSS feeds",
    "Help centre", "Subscribe", "Gift subscriptions", "Student offer", "Manage account",
]  # fmt: skip
MOST_READ = [
    "Why the new budget leaves rural bus routes behind",
    "Inside the lab growing concrete that repairs its own cracks",
    "Heatwave warning issued for the weekend across the south",
    "The quiet comeback of the neighbourhood repair café",
    "Five charts that explain the housing squeeze",
]

CSS = (
    ":root{--ink:#1a1a1a;--paper:#fffdf8;--accent:#c7361f;--muted:#6b6b6b;--rule:#e4e0d8}"
    "*,*::before,*::after{box-sizing:border-box}html{font-size:100%;-webkit-text-size-adjust:100%}"
    "body{margin:0;background:var(--paper);color:var(--ink);font:1.0625rem/1.6 Georgia,'Times New Roman',serif}"
    ".site-header{border-bottom:1px solid var(--rule);position:sticky;top:0;background:var(--paper);z-index:20}"
    ".site-header__inner{max-width:72rem;margin:0 auto;display:flex;align-items:center;gap:1.5rem;padding:.75rem 1rem}"
    ".logo svg{width:9rem;height:auto;display:block}.nav{display:flex;flex-wrap:wrap;gap:.25rem 1rem;margin:0;"
    "padding:0;list-style:none;font:600 .875rem/1.2 'Helvetica Neue',Arial,sans-serif;text-transform:uppercase}"
    ".nav a{color:var(--ink);text-decoration:none;padding:.25rem 0;border-bottom:2px solid transparent}"
    ".nav a:hover,.nav a[aria-current]{border-bottom-color:var(--accent)}.subnav{font-size:.8125rem;color:"
    "var(--muted)}.breadcrumbs{max-width:44rem;margin:1.5rem auto 0;padding:0 1rem;font:.8125rem/1.4 Arial,"
    "sans-serif}.breadcrumbs ol{display:flex;gap:.5rem;list-style:none;margin:0;padding:0}.breadcrumbs li+li::"
    "before{content:'/';margin-right:.5rem;color:var(--muted)}article{max-width:44rem;margin:0 auto;padding:0 1rem}"
    "article h1{font-size:clamp(2rem,5vw,3rem);line-height:1.1;margin:.5rem 0 1rem;letter-spacing:-.01em}"
    ".standfirst{font-size:1.25rem;line-height:1.45;color:#333}.byline{font:.875rem/1.4 Arial,sans-serif;color:"
    "var(--muted);border-top:1px solid var(--rule);border-bottom:1px solid var(--rule);padding:.5rem 0;margin:"
    "1.25rem 0}figure{margin:1.5rem 0}figure img{width:100%;height:auto}figcaption{font:.8125rem/1.4 Arial,sans-"
    "serif;color:var(--muted);margin-top:.4rem}article h2{font-size:1.5rem;margin:2rem 0 .5rem}table{width:100%;"
    "border-collapse:collapse;font:.9375rem/1.4 Arial,sans-serif;margin:1.25rem 0}th,td{text-align:left;padding:"
    ".4rem .5rem;border-bottom:1px solid var(--rule)}th{font-weight:700}.sidebar{max-width:44rem;margin:2.5rem "
    "auto;padding:1rem;border-top:4px solid var(--ink)}.sidebar ol{padding-left:1.25rem}.newsletter{background:"
    "#f3efe6;padding:1.5rem;margin:2rem auto;max-width:44rem}.newsletter input{font:inherit;padding:.5rem;border:"
    "1px solid #bbb;width:65%}.newsletter button{font:600 1rem Arial,sans-serif;padding:.55rem 1rem;background:"
    "var(--accent);color:#fff;border:0}.site-footer{background:#111;color:#ddd;padding:2rem 1rem;margin-top:3rem;"
    "font:.875rem/1.6 Arial,sans-serif}.site-footer a{color:#ddd}.site-footer ul{columns:4 10rem;list-style:none;"
    "padding:0}.cookie{position:fixed;inset:auto 1rem 1rem 1rem;max-width:40rem;margin:0 auto;background:#fff;"
    "box-shadow:0 4px 24px rgba(0,0,0,.2);padding:1rem 1.25rem;border-radius:6px;font:.875rem/1.5 Arial,sans-"
    "serif}.cookie[open]{display:block}@media (max-width:40rem){.site-header__inner{flex-wrap:wrap}.nav{font-size:"
    ".8125rem}.newsletter input{width:100%}}@media print{.site-header,.sidebar,.newsletter,.site-footer,.cookie"
    "{display:none}}.visually-hidden{position:absolute!important;clip:rect(1px,1px,1px,1px);overflow:hidden;"
    "height:1px;width:1px}"
)
SCRIPT = """
window.dataLayer = window.dataLayer || [];
function gtag(){dataLayer.push(arguments);}
gtag('js', new Date());
gtag('config', 'G-EXAMPLE123', {anonymize_ip: true, page_type: 'article', section: 'cities/transport'});
(function (w, d) {
  var consent = (d.cookie.match(/(?:^|; )consent=([^;]*)/) || [])[1];
  var dialog = d.getElementById('cookie-dialog');
  if (!consent && dialog && typeof dialog.showModal === 'function') { dialog.showModal(); }
  d.addEventListener('click', function (event) {
    var button = event.target.closest('[data-consent]');
    if (!button) { return; }
    d.cookie = 'consent=' + button.getAttribute('data-consent') + ';max-age=31536000;path=/;SameSite=Lax';
    dialog.close();
    w.dataLayer.push({event: 'consent_update', value: button.getAttribute('data-consent')});
  });
  var progress = d.querySelector('[data-reading-progress]');
  w.addEventListener('scroll', function () {
    var article = d.querySelector('article');
    if (!article || !progress) { return; }
    var rect = article.getBoundingClientRect();
    var done = Math.min(1, Math.max(0, -rect.top / (rect.height - w.innerHeight)));
    progress.style.transform = 'scaleX(' + done.toFixed(3) + ')';
  }, {passive: true});
})(window, document);
"""
LAZY_SCRIPT = """
(function () {
  var slots = document.querySelectorAll('[data-ad-slot]');
  var observer = new IntersectionObserver(function (entries) {
    entries.forEach(function (entry) {
      if (!entry.isIntersecting) { return; }
      var slot = entry.target;
      observer.unobserve(slot);
      var frame = document.createElement('iframe');
      frame.src = '/ads/render?slot=' + encodeURIComponent(slot.getAttribute('data-ad-slot'));
      frame.title = 'Advertisement';
      frame.loading = 'lazy';
      slot.appendChild(frame);
    });
  }, {rootMargin: '200px 0px'});
  slots.forEach(function (slot) { observer.observe(slot); });
})();
"""
JSON_LD = (
    '{"@context":"https://schema.org","@type":"NewsArticle","headline":"The tram that came back: how Valmere '
    'rebuilt the line it tore up fifty years ago","datePublished":"2026-05-14T06:00:00+01:00","dateModified":'
    '"2026-05-14T09:42:00+01:00","author":[{"@type":"Person","name":"Ines Harrow","url":"https://news.example/'
    'authors/ines-harrow"}],"publisher":{"@type":"NewsMediaOrganization","name":"The Example Courier","logo":'
    '{"@type":"ImageObject","url":"https://news.example/static/logo-600x60.png","width":600,"height":60}},'
    '"image":["https://news.example/img/2026/05/tram-1x1.jpg","https://news.example/img/2026/05/tram-4x3.jpg",'
    '"https://news.example/img/2026/05/tram-16x9.jpg"],"articleSection":"Cities","isAccessibleForFree":true}'
)
LOGO = (
    '<svg viewBox="0 0 240 32" role="img" aria-label="The Example Courier"><title>The Example Courier</title>'
    '<path d="M4 6h18v4h-7v18h-4V10H4zM26 6h4v8h9V6h4v22h-4v-10h-9v10h-4zM48 6h14v4H52v5h9v4h-9v5h10v4H48z" '
    'fill="currentColor"/><path d="M78 17c0-6.6 4.7-11.4 11-11.4 3.6 0 6.4 1.4 8.3 3.8l-3 2.5c-1.3-1.7-3.1-2.6-'
    "5.3-2.6-4 0-6.9 3.2-6.9 7.7s2.9 7.7 6.9 7.7c2.2 0 4-.9 5.3-2.6l3 2.5c-1.9 2.4-4.7 3.8-8.3 3.8-6.3 0-11-4.8-"
    '11-11.4z" fill="currentColor"/></svg>'
)
ARTICLE = [
    ("h2", "A line that was never quite forgotten"),
    (
        "p",
        "When the last tram ran down Harbour Street in 1974, the city council held a small ceremony, sold the "
        "cars for scrap and paved over the rails within a month. Half a century later, Valmere has spent six "
        "years and a little over 410 million euros putting them back. On Monday morning the first passengers "
        "boarded the new Line 1 at the railway station, and by lunchtime the operator said it had counted more "
        "than eleven thousand trips, roughly twice what its planners had expected for an opening day.",
    ),
    (
        "p",
        "The route is not a copy of the old one. It follows the former alignment for about four kilometres "
        "through the centre, then turns east across the river on a new bridge to reach the hospital, the "
        "university campus and the housing estates of Brenner Heights, which did not exist when the original "
        "line closed. In all it runs for 11.6 kilometres with 23 stops, and a tram is due every six minutes at "
        "peak times and every ten minutes in the evening.",
    ),
    ("h2", "Why bring it back?"),
    (
        "p",
        "City officials give three reasons. The first is congestion: the bus routes that replaced the trams had "
        "become the slowest in the region, with an average speed of 12 kilometres an hour on the central "
        "corridor. The second is air quality, which has breached national limits on Harbour Street in most "
        "winters since records began. The third, and the one the mayor, Clara Odum, returns to most often, is "
        "housing. About 6,500 new homes are planned along the eastern half of the route, and the developers' "
        "contributions paid for nearly a fifth of the construction budget.",
    ),
    (
        "p",
        "“We were never going to build those homes around a bus that sits in traffic,” Odum said at the "
        "opening. “A tram is a promise that the service will still be there in thirty years. People plan their "
        "lives around that, and so do businesses.”",
    ),
    ("h2", "What it cost, and who paid"),
    (
        "p",
        "The final bill came in about 9 per cent above the budget approved in 2020, mostly because of the "
        "river crossing, where unexpected soft ground required deeper foundations. The council says the "
        "overrun was covered by a contingency fund and did not require new borrowing.",
    ),
    (
        "table",
        [
            ("Source", "Million euros"),
            ("National transport grant", "182"),
            ("City council borrowing", "121"),
            ("Developer contributions", "79"),
            ("Regional government", "28"),
        ],
    ),  # fmt: skip
    (
        "p",
        "Critics are not convinced that the money was well spent. The opposition group on the council argues "
        "that electric buses on dedicated lanes could have delivered most of the benefits for a third of the "
        "cost, and several shop owners on Harbour Street say two years of construction work drove customers "
        "away. A survey by the local chamber of commerce found that 14 of the 90 shops on the street closed "
        "during the works, although the chamber acknowledged that some would have closed anyway.",
    ),
    ("h2", "The lessons other cities are taking"),
    (
        "p",
        "Transport planners from several cities were at the opening. Those who spoke to the Courier pointed to "
        "three decisions they would copy:",
    ),  # fmt: skip
    (
        "ul",
        [
            "Building the depot first, so that trams could be tested while the track was still being laid.",
            "Paying shops on the route a monthly allowance during the works, instead of compensation afterwards.",
            "Publishing the timetable and the fares a year before opening, so that employers could plan.",
        ],
    ),  # fmt: skip
    (
        "p",
        "Not everything went smoothly. A signalling fault stopped services for forty minutes on the first "
        "afternoon, and the operator admitted that the ticket machines at four stops had not been switched on. "
        "Passengers were allowed to travel free until the machines worked. The operator expects ridership to "
        "settle at around 38,000 trips a day by the end of the year, which would make Line 1 the busiest public "
        "transport route in the city.",
    ),
    (
        "p",
        "For the people who use it, the verdict on the first day was mostly practical. Amira Castell, a nurse "
        "who lives in Brenner Heights, said her journey to the hospital had fallen from forty minutes on two "
        "buses to fourteen minutes on one tram. Others were less impressed: a group of residents near the "
        "depot has complained about the noise of trams leaving before six in the morning, and the operator has "
        "promised to measure it.",
    ),
    (
        "p",
        "A second line, running north to the airport, is in the planning stage. The council hopes to take a "
        "final decision next spring, once it has seen a full year of figures from the first.",
    ),
]


SHARE = {  # network: an icon's path, as share bars inline them
    "Facebook": "M22 12a10 10 0 1 0-11.6 9.9v-7H7.9V12h2.5V9.8c0-2.5 1.5-3.9 3.8-3.9 1.1 0 2.2.2 2.2.2v2.5h-1.3"
    "c-1.2 0-1.6.8-1.6 1.6V12h2.8l-.4 2.9h-2.3v7A10 10 0 0 0 22 12z",
    "X": "M18.2 2.3h3.4l-7.4 8.4 8.7 11.5h-6.8l-5.3-7-6.1 7H1.3l7.9-9L.9 2.3h7l4.8 6.4 5.5-6.4z"
    "m-1.2 17.9h1.9L7.1 4.2H5.1z",
    "LinkedIn": "M20.4 20.5h-3.6v-5.6c0-1.3 0-3-1.8-3s-2.1 1.4-2.1 2.9v5.7H9.3V9h3.4v1.6h.1c.5-.9 1.6-1.8 3.4-1.8"
    " 3.6 0 4.3 2.4 4.3 5.5v6.2zM5.3 7.4a2.1 2.1 0 1 1 0-4.2 2.1 2.1 0 0 1 0 4.2zM7.1 20.5H3.6V9h3.5v11.5z",
    "Email": "M2 4h20a2 2 0 0 1 2 2v12a2 2 0 0 1-2 2H2a2 2 0 0 1-2-2V6a2 2 0 0 1 2-2zm0 2v.5l10 6.3 10-6.3V6z"
    "m0 2.9V18h20V8.9l-10 6.3z",
}


def _share_bar() -> str:
    return (
        '<div class="share" aria-label="Share this article">'
        + "".join(
            f'<a class="share__link css-{random.Random(n).getrandbits(32):08x}" href="/share/{n.lower()}" '
            f'aria-label="Share on {n}"><svg viewBox="0 0 24 24" width="20" height="20" aria-hidden="true">'
            f'<path d="{d}" fill="currentColor"/></svg></a>'
            for n, d in SHARE.items()
        )
        + "</div>\n"
    )


def _placeholder() -> str:
    """A blurred low-quality placeholder image as a data URI, as image CDNs inline them."""
    return "data:image/webp;base64," + base64.b64encode(random.Random(1).randbytes(2400)).decode()


def _next_data() -> str:
    """The page's state as a React site ships it for hydration (a JSON script)."""
    rng = random.Random(2)
    related = [
        {"id": f"{rng.getrandbits(64):016x}", "headline": title, "url": f"/story/{i}", "section": "cities",
         "image": {"src": f"/img/2026/05/{rng.getrandbits(40):010x}.jpg", "width": 640, "height": 360},
         "published": f"2026-05-{10 + i:02d}T0{i}:15:00+01:00", "readingTime": 3 + i}
        for i, title in enumerate(MOST_READ, 1)
    ]  # fmt: skip
    state = {
        "props": {"pageProps": {"article": {"id": f"{rng.getrandbits(64):016x}", "section": "cities/transport",
            "tags": ["trams", "public transport", "Valmere", "urban planning", "infrastructure"],
            "wordCount": 1003, "paywall": {"type": "metered", "free": 5}, "related": related},
            "ads": {"slots": [{"id": s, "sizes": [[300, 250], [728, 90]], "lazy": True}
                              for s in ("article-mid", "sidebar-1", "footer")]},
            "experiments": {f"exp_{rng.getrandbits(24):06x}": rng.choice(["control", "variant"]) for _ in range(8)}}},
        "page": "/[section]/[year]/[month]/[day]/[slug]", "buildId": f"{rng.getrandbits(80):020x}",
    }  # fmt: skip
    return f'<script id="__NEXT_DATA__" type="application/json">{json.dumps(state)}</script>\n'


def build_page() -> str:
    """The whole page as a news site serves it (no network, no files)."""
    head = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        "<title>The tram that came back | Cities | The Example Courier</title>\n"
        '<meta name="description" content="Fifty years after tearing up its trams, Valmere has rebuilt the line.">\n'
        + "".join(
            f'<meta property="og:{key}" content="{value}">\n'
            for key, value in [
                ("type", "article"),
                ("title", "The tram that came back"),
                ("site_name", "Courier"),
                ("url", "https://news.example/cities/2026/05/14/valmere-tram"),
                ("image", "https://news.example/img/2026/05/tram-16x9.jpg"),
            ]
        )  # fmt: skip
        + '<link rel="canonical" href="https://news.example/cities/2026/05/14/valmere-tram">\n'
        '<link rel="preload" href="/static/fonts/serif-regular.woff2" as="font" type="font/woff2" crossorigin>\n'
        f"<style>{CSS}</style>\n"
        '<script async src="https://www.googletagmanager.com/gtag/js?id=G-EXAMPLE123"></script>\n'
        f"<script>{SCRIPT}</script>\n"
        f'<script type="application/ld+json">{JSON_LD}</script>\n</head>\n'
    )
    body = _banner() + _article() + _sidebar() + _footer() + _next_data()
    return head + "<body>\n" + body + "</body>\n</html>\n"


def _banner() -> str:
    nav = "".join(
        f'<li><a href="/{s.lower()}">{s}</a><ul class="nav__menu">'
        + "".join(f'<li><a href="/{s.lower()}/{t.lower().replace(" ", "-")}">{t}</a></li>' for t in SUBSECTIONS[:6])
        + "</ul></li>"
        for s in SECTIONS
    )
    subnav = "".join(f'<li><a href="/cities/{s.lower().replace(" ", "-")}">{s}</a></li>' for s in SUBSECTIONS)
    return (
        '<a class="visually-hidden" href="#main">Skip to content</a>\n'
        '<div class="progress" data-reading-progress aria-hidden="true"></div>\n'
        f'<header class="site-header"><div class="site-header__inner"><a class="logo" href="/">{LOGO}</a>\n'
        f'<nav aria-label="Sections"><ul class="nav">{nav}</ul></nav>\n'
        f'<nav aria-label="Cities" class="subnav"><ul class="nav">{subnav}</ul></nav>\n'
        '<form role="search" action="/search"><label class="visually-hidden" for="q">Search</label>'
        '<input id="q" name="q" type="search" placeholder="Search"><button>Go</button></form>\n'
        '<a class="button" href="/subscribe">Subscribe</a> <a href="/login">Sign in</a></div></header>\n'
        '<nav class="breadcrumbs" aria-label="Breadcrumb"><ol><li><a href="/">Home</a></li>'
        '<li><a href="/cities">Cities</a></li><li><a href="/cities/transport">Transport</a></li></ol></nav>\n'
    )


def _article() -> str:
    body = []
    for kind, content in ARTICLE:
        if kind == "table":
            rows = "".join(
                "<tr>" + "".join(f"<{'th' if i == 0 else 'td'}>{cell}</{'th' if i == 0 else 'td'}>" for cell in row)
                + "</tr>\n" for i, row in enumerate(content)
            )  # fmt: skip
            body.append(f"<table>\n<caption>Who paid for Line 1</caption>\n{rows}</table>\n")
        elif kind == "ul":
            body.append("<ul>\n" + "".join(f"<li>{item}</li>\n" for item in content) + "</ul>\n")
        else:
            body.append(f"<{kind}>{content}</{kind}>\n")
        if len(body) == 4:
            body.append('<div class="ad" data-ad-slot="article-mid" aria-label="Advertisement"></div>\n')
    return (
        '<main id="main">\n<article>\n<header>\n<p class="kicker"><a href="/cities/transport">Transport</a></p>\n'
        "<h1>The tram that came back: how Valmere rebuilt the line it tore up fifty years ago</h1>\n"
        '<p class="standfirst">Six years, 410 million euros and one new bridge later, the city\'s trams are '
        "running again. Not everyone is celebrating.</p>\n"
        '<p class="byline">By <a href="/authors/ines-harrow" rel="author">Ines Harrow</a>, cities correspondent · '
        '<time datetime="2026-05-14T06:00:00+01:00">14 May 2026</time></p>\n</header>\n'
        + _share_bar()
        + f'<figure><img style="background-image:url({_placeholder()})" src="/img/2026/05/tram-16x9.jpg" '
        'srcset="/img/2026/05/tram-16x9-640.jpg 640w, '
        '/img/2026/05/tram-16x9-1280.jpg 1280w" sizes="(max-width: 44rem) 100vw, 44rem" alt="A green tram '
        'crosses the new river bridge" width="1280" height="720" loading="eager">\n'
        "<figcaption>The first passenger service crosses the Ostbrücke on Monday morning. Photograph: Marta "
        "Lindqvist</figcaption></figure>\n" + "".join(body) + '<footer class="article-footer"><p>Ines Harrow '
        "reports on cities and transport. Corrections: corrections@news.example</p></footer>\n</article>\n"
        "</main>\n"
    )


def _sidebar() -> str:
    most_read = "".join(f'<li><a href="/story/{i}">{title}</a></li>' for i, title in enumerate(MOST_READ, 1))
    return (
        f'<aside class="sidebar" aria-label="Most read"><h2>Most read</h2><ol>{most_read}</ol>'
        '<div class="ad" data-ad-slot="sidebar-1" aria-label="Advertisement"></div></aside>\n'
        '<section class="newsletter" aria-label="Newsletter"><h2>The Cities briefing</h2>'
        "<p>Our weekly newsletter on how cities work, and what happens when they don't.</p>"
        '<form action="/newsletters/subscribe" method="post"><input type="email" name="email" placeholder='
        '"Your email address" required><input type="hidden" name="list" value="cities-weekly">'
        '<button type="submit">Sign up</button></form></section>\n'
        f"<script>{LAZY_SCRIPT}</script>\n"
    )


def _footer() -> str:
    links = "".join(f'<li><a href="/{t.lower().replace(" ", "-")}">{t}</a></li>' for t in FOOTER)
    sections = "".join(f'<li><a href="/{s.lower()}">{s}</a></li>' for s in SECTIONS)
    return (
        f'<footer class="site-footer"><nav aria-label="Sections"><ul>{sections}</ul></nav>'
        f'<nav aria-label="About"><ul>{links}</ul></nav>'
        "<p>© 2026 The Example Courier Ltd. Registered in Valmere, company number 0482913. All rights "
        "reserved.</p></footer>\n"
        '<dialog class="cookie" id="cookie-dialog" aria-labelledby="cookie-title"><h2 id="cookie-title">Your '
        "privacy</h2><p>We and our 142 partners use cookies to measure traffic, personalise content and show "
        'advertising. See our <a href="/privacy">privacy policy</a>.</p><button data-consent="all">Accept all'
        '</button> <button data-consent="essential">Essential only</button></dialog>\n'
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", metavar="PATH", help="also save the page there")
    args = parser.parse_args(argv)
    page = build_page()
    path = pathlib.Path(args.write) if args.write else pathlib.Path("/tmp/longlm-formats-page.html")
    path.write_text(page, encoding="utf-8")
    text = read_documents([str(path)]).text
    kept = render(parse_html(page, label=str(path), what="an HTML page"), drop_landmarks=False)
    raw, extracted = count_tokens(page, model="llama2"), count_tokens(text, model="llama2")
    print(f"page:            {len(page.encode()):>6,} bytes  {raw.count:>6,} tokens ({raw.method})")
    print(f"with navigation: {len(kept.encode()):>6,} bytes  {count_tokens(kept, model='llama2').count:>6,} tokens")
    print(f"extracted:       {len(text.encode()):>6,} bytes  {extracted.count:>6,} tokens")
    print(f"ratio:           {raw.count / extracted.count:.1f}x fewer tokens")
    return 0


if __name__ == "__main__":
    sys.exit(main())
