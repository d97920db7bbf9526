"""Statsd lines for the property tests of the compiled parts: hand-picked ones of every dialect and way
to get one wrong, and hypothesis strategies that draw lines, values and rates afresh."""

from __future__ import annotations

from hypothesis import strategies as st

#: Lines of every dialect the parser reads, and of most ways to get one wrong.
LINES = [
    # Etsy, DogStatsD, InfluxDB-style, packed values, rates, every type
    "hits:1|c", "hits:1|c|#env:prod", "hits:2|c|@0.5", "hits:1|c|#env:prod,region:eu", "hits:3|c|@0.1|#a:1",
    "hits,region=eu,az=b:1|c", "hits,env=x:1|c|#env:prod", "lat:3.5|ms", "lat:37.80|ms|#route:/api",
    "lat:1:2:3|ms|@0.25", "temp:20|g", "temp:+2|g", "temp:-1|g", "temp:-0|g", "temp:1:+2:-3|g", "users:u1|s",
    "users:a:b|s", "users:u2|s|#x:y", "multi:1:2:3|d", "h:0.5|h", "x:1e3|c", "x:.5|c", "x:5.|c", "x:-0.0e+1|ms",
    "x:123456789012345678|ms", "x:0.1234567890123456789|ms", "x:1e308|g", "x:2.2250738585072014e-308|ms",
    "a b  c/d:1|c", "  spaced :1|c", "x:1|c|#k", "x:1|c|#k:", "x:1|c|#k:v:w", "x:1|c|#,,k:v,", "x:1|c||",
    "x:1|c|c:container|T1700000000", "ci:1|c|c:abc|#k:v", "ci:2|c|#container_id:x|c:|c:y",
    "x:1|c|@0.5|@1", "x:1|c|#a:1|#b:2", "x:1|c|#a:1|#a:2", "x|y:1|c",
    "hits:1|c\r", "hits:1|c\r\r", "q:1|c|#host:mine", "k,host=x:1|c",
    # wrong in every way the parser counts
    "bad line", "x:1|zz", "x:1", "x:|c", ":1|c", " :1|c", "x:1|c|@0", "x:1|c|@2", "x:1|c|@-1", "x:1|c|@",
    "x:1|c|@1e-320", "x:1e300|c|@1e-10", "x:nan|c", "x:inf|g", "x:1e400|ms", "x:1_000|c", "x: 12|c", "x:12 |c",
    "x:1e301|ms", "x:-2e300|g", "x:1e290|c|@1e-20",
    "x:0x10|c", "x:1:two|ms", "x:|s", "x:1|c|#:v", "x,=v:1|c", "x,k:1|c", "x,:1|c", "_e{1,1}:a|b", "_sc|x|0",
    "_sc|x|0|#env:prod", "_sc|x|0|h:web|m:down: disk", "_e{5,4}:title|text|#env:prod", "_e{5,4}:title",
    "x:1|c|#" + ",".join(f"t{i}:v" for i in range(70)), "x:1|c|#k:" + "v" * 1100, "n" * 1100 + ":1|c",
    "x:" + "1" * 70 + "|c", "hits:\x01|c", "hi\x7fts:1|c", "hits:1|c\x00", "\t", " ", "",
    # non-ASCII, good and bad
    "caf\u00e9:1|c", "x:1|c|#city:K\u00f6ln", "\u00a0x:1|c", "x\u2003y:1|c", "x:\uff11|c", "x:1|c|#k:\u00a0",
]
#: Lines that may start or be JSON, or bytes no text has.
OTHER = [
    '{"metric_name": "j", "metric_type": "counter", "value": 1}', '{"metric_name": "g", "metric_type": "gauge", '
    '"value": 5, "sample_rate": 1}', '[{"metric_name": "t", "metric_type": "timer", "value": 2.5}]', "[1]",
    "{", "[x:1|c", "{x:1|c", "  {x:1|c", "\t[1]", "x:1|c|#k:[v]", '{"metric_name": "a\\ud800", "metric_type": "trace"}',
]
BYTES = [b"\xff\xfe", b"x:1|c|#k:\xc3", b"caf\xc3\xa9:2|c", b"\xed\xa0\x80:1|c"]


def payload(lines: list[str], newline_after: bool = False) -> bytes:
    return ("\n".join(lines) + ("\n" if newline_after else "")).encode("utf-8", "surrogatepass")


NUMBER_TEXT = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(repr),  # up to 17 significant digits
    st.integers(0, 25).flatmap(lambda places: st.decimals(allow_nan=False, allow_infinity=False, places=places)).map(
        str),
    st.integers(-10**20, 10**20).map(str),
    st.tuples(st.integers(0, 10**16), st.integers(0, 30), st.sampled_from(["", "-", "+"])).map(
        lambda t: f"{t[2]}{str(t[0])[:-t[1] or None]}.{str(t[0])[-t[1]:] if t[1] else ''}"),
    st.from_regex(r"[+-]?[0-9]{0,19}(\.[0-9]{0,24})?([eE][+-]?[0-9]{1,3})?", fullmatch=True),
)
RATE_TEXT = st.one_of(st.sampled_from(["1", "0.5", "0.1", "0.3333333333333333", "1e-300", "0"]),
                      st.floats(min_value=0.0, max_value=1.0).map(repr))


@st.composite
def generated_lines(draw: st.DrawFn) -> str:
    """A statsd line of any type, with values and rates drawn afresh (mostly well formed)."""
    code = draw(st.sampled_from(["c", "g", "ms", "h", "d", "s"]))
    values = draw(st.lists(NUMBER_TEXT, min_size=1, max_size=3))
    if code == "g" and draw(st.booleans()):
        values = [value if value[:1] in "+-" else "+" + value for value in values]
    line = f"m{draw(st.integers(0, 3))}:{':'.join(values)}|{code}"
    if draw(st.booleans()):
        line += f"|@{draw(RATE_TEXT)}"
    if draw(st.booleans()):
        line += "|#" + ",".join(draw(st.lists(st.sampled_from(["a:1", "b:2", "a:3", "host:x", "c"]), max_size=4)))
    return line


#: Characters that make statsd lines, and a few that break them.
STATSD_ALPHABET = st.sampled_from(list("abcxyz.-_:|@#,=+-0123456789eE. /\t\r{[") + ["\u00e9", "\x01", "\u2003"])



#: The common bad input the compiled window counts itself (no Python parser): each way it must agree with
#: the Python's reason, and the boundaries where it must leave the line to the Python instead.
DEEP = 64  # stages.receiver.parsers.base.MAX_JSON_DEPTH
HOSTILE = [
    # numbers the strict grammar refuses: NaN and infinity spelt every way, overflow, too long, not numbers
    "x:NaN|c", "x:-nan|g", "x:+Infinity|ms", "x:iNf|g", "x:-INFINITY|h", "x:nan(1)|c", "x:nanx|c", "x:infinite|c",
    "x:1e999|g", "x:" + "1" * 400 + "|ms", "x:" + "1" * 400 + ".5e-300|ms", "x:" + "0" * 70 + "1|c",
    "x:" + "9" * 64 + "|g", "x:" + "9" * 65 + "|g", "x:1,5|c", "x:1..2|c", "x:--1|c", "x:.|c", "x:-|c", "x:e5|c",
    "x:1e|c", "x:1_0e400|c", "x:1_0|c", "x: nan|c", "x:nan |c", "x:1|c|@nan", "x:1|c|@abc", "x:1|c|@1e999",
    "x:1|c|@ 0.5", "x:1:nan:2|ms", "x:1:abc:nan|ms", "x:nan:abc|ms", "x:1e300|c|@0.5",
    # tags, names, types in the parser's order
    "x:1|c|#" + ",".join(f"t{i}:v" for i in range(200)), "x,a=1,b:1|c|#" + ",".join(f"t{i}" for i in range(70)),
    "x:nan|q", "x:nan|c|@0", " :nan|c", "n" * 1100 + ":nan|c", "x,=v:nan|c", "x:1|c|#k:" + "v" * 1100 + "|@0",
    # control bytes (after the invalid UTF-8 check, before anything else)
    "x:1|c\x0b", "\x1fx:1|c", "_e{1,1}:a|b\x01", "_sc|\x7f", "x\x00", "\x1c[[[[",
    # lines holding '{' or '[' that are statsd lines, and events
    "x:1|c|#k:[v],j:{w}", "x{:1|c", "x:[1]|c", "_e{5,4}:title|text|#env:prod", "a:{|s", "x:1|c|#a:[" + "[" * 100,
    # JSON documents too deep to read, just too deep, just not, and what only the json module can tell
    "[" * (DEEP + 1), "[" * DEEP, "[" * DEEP + "]" * DEEP, " \t[ [\r" + "[" * (DEEP - 1), '{"a":' * (DEEP + 1),
    '{ "k" :\t' * 70, '{"a\\"b":' * 70, '{"\u00e9":' * 70, '{"a":' * 30 + "[" * 40, "[" * 100 + "1" + "]" * 100,
    "[" * 100 + "x", "\x0b" + "[" * 100, "\u00a0" + "[" * 100, "\u2003{", "\u00e9{", "[" * 5000, "[" * 100 + "\r",
]
#: Bytes: invalid UTF-8 beside brackets, in deep documents and in statsd lines.
HOSTILE_BYTES = [
    b"\xff{", b"{\xff", b"[" * 100 + b"\xff", b"\xc3[", b"x:1|c|#k:[\xc3]", b"\xed\xa0\x80{", b"\xf4\x90\x80\x80[",
    b"\xe0\x80\x80x:1|c", b"\xf0\x9f\x98\x80[", b"\xc0\xafx:1|c", b"ok:1|c\n\xff[\ngood:2|c",
    b"ok:1|c\r\n" + b"[" * 70 + b"\r\n{\xfe\ngood:2|c\r\n", b"\n\n  " + b"[" * 70 + b"\nx:1|c",
]
#: Characters that make numbers, nearly numbers and JSON openings, for drawn hostile lines.
NUMBER_ALPHABET = st.sampled_from(list("0123456789.+-eE_naifyNAIFTYx \t,"))
JSON_PIECES = st.sampled_from(["[", "[", "[", " ", "\t", "\r", '{"a":', '{ "k" : ', '{"a\\n":', "]", "1", ",", "x",
                               '{"\u00e9":', "\u00a0", "\x0b", "{"])
