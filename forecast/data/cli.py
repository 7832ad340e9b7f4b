"""`forecast data`: get prices, build feature tiers, check and list what is on disk.

    forecast data download SYMBOL... [--start DAY] [--end DAY]
    forecast data import SYMBOL FILE
    forecast data sample
    forecast data synthetic SYMBOL --signal planted|none [--years N] [--seed S] [--strength X] [--vix VIXSYMBOL]
    forecast data build --symbol SPY [--tier a25] [--vix VIX]
    forecast data verify
    forecast data info

Every subcommand takes --data-dir (default $FORECAST_DATA_DIR, else ./data). Every input is
validated before anything is written, so a failed command leaves the data directory as it was.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from jsonargparse import ArgumentParser, Namespace
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from forecast.core.domains import Date, Seed, SignalStrength, Symbol, SyntheticYears
from forecast.core.parsers import command_parser, parse, sub_parser
from forecast.data.manifest import load_manifest, verify
from forecast.data.paths import DATA_DIR_ENV, resolve_data_dir, storage_symbol
from forecast.data.raw import check_raw, write_raw


def _console() -> Console:
    """Rich falls back to 80 columns when piped, which folds file names; logs can be wider."""
    return Console(width=None if sys.stdout.isatty() else 120)


def _echo(line: str) -> None:
    print(line, flush=True)


def _tell_written(entry: dict[str, Any]) -> None:
    sample = " [sample]" if entry.get("sample") else ""
    _echo(
        f"wrote {entry['path']}: {entry['rows']} rows, {entry['first']}..{entry['last']}, "
        f"from {entry['source']}{sample}"
    )
    for note in entry.get("notes", []):
        _echo(f"  {note}")


def _write_all(data_dir: Path, items: Sequence[tuple[str, Any, str, bool]]) -> None:
    """Validate every (symbol, frame, source, sample) first, then write them one by one."""
    for _symbol, frame, source, _sample in items:
        check_raw(frame, source)
    for symbol, frame, source, sample in items:
        _tell_written(write_raw(data_dir, symbol, frame, source, sample=sample))


def cmd_download(args: Namespace) -> int:
    """`download`: fetch every symbol, validate all, then write them."""
    from forecast.data.sources import fetch_yahoo

    for symbol in args.symbols:
        storage_symbol(symbol)  # a bad name fails before any network call
    items = [
        (
            symbol,
            fetch_yahoo(symbol, args.start, args.end, echo=_echo),
            f"yfinance {symbol} (auto_adjust=False)",
            False,
        )
        for symbol in args.symbols
    ]
    _write_all(args.data_dir, items)
    return 0


def cmd_import(args: Namespace) -> int:
    """`import`: one CSV file as one symbol."""
    from forecast.data.sources import read_price_csv

    frame = read_price_csv(args.file, args.symbol)
    _write_all(args.data_dir, [(args.symbol, frame, str(args.file), False)])
    return 0


def cmd_sample(args: Namespace) -> int:
    """`sample`: the offline series shipped with `arch`."""
    from forecast.data.sources import sample_series

    _write_all(args.data_dir, [(s.symbol, s.frame, s.source, True) for s in sample_series()])
    return 0


def cmd_synthetic(args: Namespace) -> int:
    """`synthetic`: the planted or null control series (forecast.data.synthetic.control_series),
    and with --vix an uninformative VIX-like series on the same days for tier c."""
    from forecast.data.synthetic import bayes_auroc, control_series, synthetic_vix

    frame = control_series(args.signal, args.years, args.seed, args.strength)
    if args.signal == "planted":
        auroc, after_up, after_down = bayes_auroc(args.strength)
        effect = (f"planted XOR volatility signal, strength {args.strength:g}: P(High[t+1] >= 1.01 Close[t]) "
                  f"{after_up:.3f} or {after_down:.3f}, Bayes AUROC {auroc:.3f} at h=1")
    else:
        effect = "no signal: the planted moves shuffled in time (a random walk)"
    items = [(args.symbol, frame, f"synthetic {args.signal} (seed {args.seed}, {args.years} years; {effect})", False)]
    if args.vix:
        vix_source = f"synthetic VIX for {args.symbol} (seed {args.seed}; carries no signal)"
        items.append((args.vix, synthetic_vix(frame["Date"], seed=args.seed + 1), vix_source, False))
    _write_all(args.data_dir, items)
    return 0


def cmd_build(args: Namespace) -> int:
    """`build`: one feature tier of one symbol."""
    from forecast.data.tiers import build_and_write

    build_and_write(args.data_dir, args.symbol, args.tier, args.vix, echo=_echo)
    return 0


def cmd_verify(args: Namespace) -> int:
    """`verify`: table of every manifest entry; exit 1 naming each mismatch."""
    checks = verify(args.data_dir)
    table = Table(title=f"manifests under {args.data_dir}")
    for column in ("file", "rows", "status"):
        table.add_column(column, overflow="fold")
    for check in checks:
        status = "[green]ok[/]" if check.ok else "[red]" + escape("; ".join(check.problems)) + "[/]"
        table.add_row(check.path, "" if check.rows is None else str(check.rows), status)
    _console().print(table)
    bad = [check for check in checks if not check.ok]
    console = Console(stderr=True, highlight=False)
    for check in bad:
        console.print(
            f"mismatch: {check.path}: {'; '.join(check.problems)}", markup=False, soft_wrap=True
        )
    print(f"{len(checks) - len(bad)} of {len(checks)} files ok")
    return 1 if bad else 0


def cmd_info(args: Namespace) -> int:
    """`info`: what is on disk and which tiers exist."""
    from forecast.data.tiers import TIERS

    data_dir = args.data_dir
    raw, processed = load_manifest(data_dir, "raw"), load_manifest(data_dir, "processed")
    if not raw and not processed:
        _echo(
            f"no data under {data_dir} yet: run `forecast data sample` (offline) or "
            f"`forecast data download SPY ^VIX` (set {DATA_DIR_ENV} or --data-dir to change where)"
        )
    table = Table(title=f"data under {data_dir}")
    for column in ("file", "rows", "first", "last", "repaired bars", "from"):
        table.add_column(column, overflow="fold")
    for entry in [*raw.values(), *processed.values()]:
        origin = entry.get("source", "")
        if "tier" in entry:
            origin = (
                f"tier {entry['tier']} v{entry['tier_version']} of {', '.join(entry['sources'])}"
            )
        origin += " [sample]" if entry.get("sample") else ""
        repaired = str(entry.get("repaired_bars", "")) if "tier" not in entry else ""
        table.add_row(entry["path"], str(entry["rows"]), entry["first"], entry["last"], repaired, origin)
    if raw or processed:
        _console().print(table)
    _echo(
        "tiers: "
        + "; ".join(
            f"{t.name} ({len(t.columns)} features): {t.description}" for t in TIERS.values()
        )
    )
    return 0


def build_parser() -> ArgumentParser:
    """The `forecast data` argument parser (jsonargparse: every option typed, see forecast.core.domains)."""
    from forecast.data.tiers import DEFAULT_TIER, TIERS

    parser = command_parser("forecast data", "Prices, feature tiers and their manifests.")
    sub = parser.add_subcommands(required=True, dest="command", metavar="COMMAND")

    def add(name: str, help: str) -> ArgumentParser:
        p = sub_parser(help)
        p.add_argument("--data-dir", type=Path | None, default=None,
                       help=f"data directory (default ${DATA_DIR_ENV}, else ./data)")
        sub.add_subcommand(name, p, help=help)
        return p

    p = add("download", "daily prices from Yahoo (yfinance)")
    p.add_argument("symbols", nargs="+", type=Symbol, metavar="SYMBOL", help="Yahoo tickers; ^VIX is stored as VIX")
    p.add_argument("--start", type=Date | None, default=None, help="first day, YYYY-MM-DD (default: all history)")
    p.add_argument("--end", type=Date | None, default=None, help="last day, inclusive, YYYY-MM-DD (default: today)")

    p = add("import", "a Yahoo-layout CSV file")
    p.add_argument("symbol", type=Symbol, metavar="SYMBOL", help="the symbol to store it as")
    p.add_argument("file", type=Path, metavar="FILE", help="Date,Open,High,Low,Close,Adj Close,Volume")

    add("sample", "offline sample: S&P 500 1999-2018 (SP500) and VIX closes 2014-2019 (VIX)")

    _add_synthetic(add("synthetic", "a control series: a planted, learnable signal or none, dated 1999-2018"))

    p = add("build", "build a feature tier from raw prices")
    p.add_argument("--symbol", type=Symbol, required=True, help="raw symbol to build from")
    p.add_argument("--tier", type=Literal[tuple(TIERS)], default=DEFAULT_TIER,  # type: ignore[valid-type]
                   help=f"one of {', '.join(TIERS)} (default {DEFAULT_TIER})")
    p.add_argument("--vix", type=Symbol | None, default=None,
                   help="raw symbol holding VIX, for tiers that use it (default VIX)")

    add("verify", "check every file against its manifest entry")
    add("info", "list what is on disk")
    return parser


def _add_synthetic(p: ArgumentParser) -> None:
    """Options of `forecast data synthetic` (forecast.data.synthetic.control_series)."""
    from forecast.data.synthetic import DEFAULT_STRENGTH

    p.add_argument("symbol", type=Symbol, metavar="SYMBOL", help="the symbol to store it as, e.g. SYN")
    p.add_argument("--signal", type=Literal["planted", "none"], required=True,
                   help="planted: tomorrow's volatility (and +1%% touch) follows an XOR of today's and "
                        "yesterday's move signs; none: the same moves shuffled (a random walk)")
    p.add_argument("--years", type=SyntheticYears, default=20,
                   help="calendar years ending 2018 (default 20: 1999-2018, like `forecast data sample`); a "
                        "shorter series is the end of a longer one with the same seed")
    p.add_argument("--seed", type=Seed, default=0, help="random seed of the moves (default 0)")
    p.add_argument("--strength", type=SignalStrength, default=DEFAULT_STRENGTH,
                   help=f"planted effect: log ratio of the volatility after the XOR is +1 to the mean one "
                        f"(default {DEFAULT_STRENGTH}: Bayes AUROC 0.725 at h=1; 0.5: 0.642; 0 = none)")
    p.add_argument("--vix", type=Symbol | None, default=None,
                   help="also write an uninformative VIX-like series on the same days under this symbol "
                        "(for tier c: `forecast data build --symbol SYN --tier c --vix SYNVIX`)")


COMMANDS = {"download": cmd_download, "import": cmd_import, "sample": cmd_sample, "synthetic": cmd_synthetic,
            "build": cmd_build, "verify": cmd_verify, "info": cmd_info}


def main(argv: list[str]) -> int:
    """Run `forecast data ARGV...`; returns the exit status.

    Raises:
        ForecastError: for user mistakes (forecast.cli prints it as one line, exit 2).
    """
    parsed = parse(build_parser(), argv)
    args = parsed[parsed.command]
    args.data_dir = resolve_data_dir(args.data_dir)
    return COMMANDS[parsed.command](args)
