# Schemathesis hooks for tests/api_schema.rs: teaches schemathesis to generate the two
# non-JSON bodies of the media routes, `application/sdp` (WHIP/WHEP offers) and
# `application/trickle-ice-sdpfrag` (trickle ICE). Offers are real ones (every direction,
# usable and unusable codecs), mutated ones (a line dropped, inserted, cut, or the whole
# offer repeated) and arbitrary text.
import schemathesis
from hypothesis import strategies as st

FP = "sha-256 7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08"


def offer(direction, codec, kind="video", pt=96):
    clock = "48000/2" if codec == "opus" else "90000"
    return "\r\n".join(
        [
            "v=0",
            "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
            "s=-",
            "t=0 0",
            "a=group:BUNDLE 0",
            f"m={kind} 9 UDP/TLS/RTP/SAVPF {pt}",
            "c=IN IP4 0.0.0.0",
            "a=rtcp:9 IN IP4 0.0.0.0",
            "a=ice-ufrag:wpTe",
            "a=ice-pwd:watchpostwatchpostwatch1",
            f"a=fingerprint:{FP}",
            "a=setup:actpass",
            "a=mid:0",
            f"a={direction}",
            "a=rtcp-mux",
            f"a=rtpmap:{pt} {codec}/{clock}",
            f"a=rtcp-fb:{pt} nack pli",
            "a=ssrc:1111 cname:test",
            "",
        ]
    )


VALID = [
    offer(d, c, k)
    for d in ("sendonly", "recvonly", "sendrecv", "inactive")
    for c, k in (("VP8", "video"), ("H264", "video"), ("opus", "audio"), ("AV1", "video"))
]


@st.composite
def mutated(draw):
    lines = draw(st.sampled_from(VALID)).split("\r\n")
    op = draw(st.integers(0, 4))
    i = draw(st.integers(0, len(lines) - 1))
    junk = draw(st.text(max_size=80))
    if op == 0:
        del lines[i]
    elif op == 1:
        lines.insert(i, junk)
    elif op == 2:
        lines[i] = lines[i][: draw(st.integers(0, max(0, len(lines[i]))))] + junk
    elif op == 3:
        lines = lines[:i]
    else:
        lines = lines * draw(st.integers(2, 12))
    return "\r\n".join(lines)


sdp = st.one_of(st.sampled_from(VALID), mutated(), st.text(max_size=300)).map(
    lambda s: s.encode("utf-8", "surrogatepass")
)
frag = st.one_of(
    st.just(
        "a=ice-ufrag:wpTe\r\na=ice-pwd:watchpostwatchpostwatch1\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\n"
        "a=mid:0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host\r\n"
    ),
    st.builds(
        lambda ip, port: f"a=ice-ufrag:wpTe\r\na=candidate:1 1 udp 2130706431 {ip} {port} typ host\r\n",
        st.ip_addresses().map(str),
        st.integers(-5, 70000),
    ),
    st.text(max_size=200),
).map(lambda s: s.encode("utf-8", "surrogatepass"))

schemathesis.openapi.media_type("application/sdp", sdp)
schemathesis.openapi.media_type("application/trickle-ice-sdpfrag", frag)


# Credentials: each operation is called with the one meant for it. tests/api_schema.rs
# writes them to the JSON file named by WATCHPOST_SCHEMATHESIS_CREDENTIALS.
import base64
import json
from datetime import datetime, timezone
import os
import re

CREDENTIALS = json.load(open(os.environ["WATCHPOST_SCHEMATHESIS_CREDENTIALS"]))
CAMERA_ROUTES = re.compile(
    r"^/(commands/[^/]+/ack|events/motion/start|events/[^/]+/motion/end|streams/[^/]+/accept"
    r"|streams/[^/]+/publish-credentials|streams/[^/]+/sfu/(publish-transport|session|trickle|close)"
    r"|streams/me/list|devices/me|devices/[^/]+/heartbeat)$"
)
CLIENT_ROUTES = re.compile(r"^/(streams/request|streams/[^/]+/sfu/subscribe-transport)$")


def credential_for(path, method, security):
    if not security:
        return None
    if path.startswith("/admin"):
        basic = base64.b64encode(CREDENTIALS["admin"].encode()).decode()
        return f"Basic {basic}"
    if path.startswith("/whip/"):
        return "Bearer " + CREDENTIALS["publish"]
    if path.startswith("/whep/"):
        return "Bearer " + CREDENTIALS["subscribe"]
    if CAMERA_ROUTES.match(path):
        return "Bearer " + CREDENTIALS["camera"]
    if CLIENT_ROUTES.match(path) or (path == "/commands" and method == "POST"):
        return "Bearer " + CREDENTIALS["client"]
    return "Bearer " + CREDENTIALS["session"]


# No caching: the credential depends on the operation.
@schemathesis.auth(refresh_interval=None)
class WatchpostAuth:
    def get(self, case, ctx):
        op = case.operation
        security = op.definition.raw.get("security", [])
        return credential_for(op.path, op.method.upper(), [s for s in security if s])

    def set(self, case, data, ctx):
        case.headers = case.headers or {}
        case.headers["Authorization"] = data


# Rules that hold for every request but that a JSON Schema cannot state (or not once for
# all): text never contains NUL (PostgreSQL cannot store it: "Text must not contain NUL
# characters"), times fall in 1970-9999, and a motion event cannot start in the future.
# A schema-valid (positive) case that breaks them is not generated; negative cases still
# may carry them.
DATE_TIME = re.compile(r"^([0-9]{4})-[0-9]{2}-[0-9]{2}T")


def breaks_global_rules(value):
    if isinstance(value, str):
        m = DATE_TIME.match(value)
        return "\x00" in value or (m is not None and int(m.group(1)) < 1970)
    if isinstance(value, dict):
        return any(breaks_global_rules(k) or breaks_global_rules(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(breaks_global_rules(v) for v in value)
    return False


@schemathesis.hook
def filter_case(ctx, case):
    meta = getattr(case, "meta", None)
    generation = getattr(meta, "generation", None)
    if generation is not None and str(generation.mode) == "negative":
        return True
    parts = [case.query, case.path_parameters, case.headers, case.cookies]
    body = case.body
    if isinstance(body, (str, dict, list)):
        parts.append(body)
    if isinstance(body, dict) and isinstance(body.get("startedAt"), str):
        try:
            started = datetime.fromisoformat(body["startedAt"].replace("Z", "+00:00"))
            if started.tzinfo is not None and started > datetime.now(timezone.utc):
                return False
        except ValueError:
            pass
    # Identifiers in the path never hold control characters (documented as a pattern; a
    # stateful step may still carry such a value over from an earlier request).
    for value in (case.path_parameters or {}).values():
        if isinstance(value, str) and any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
            return False
    return not any(breaks_global_rules(p) for p in parts if p)


def _is_control(c):
    return ord(c) < 0x20 or ord(c) == 0x7F


# The stateful phase does not pass through `filter_case`: a later step may carry a path id
# with control characters over from an earlier (negative) request and still count as a
# positive, schema-valid case, so the server's right 400 would read as a failure. Such an
# id is made pattern-valid before the call: the request stays a lookup of a resource that
# does not exist (404), which is what the step tests.
@schemathesis.hook
def before_call(ctx, case, kwargs):
    meta = getattr(case, "meta", None)
    generation = getattr(meta, "generation", None)
    if generation is not None and str(generation.mode) == "negative":
        return
    for name, value in list((case.path_parameters or {}).items()):
        if isinstance(value, str) and any(_is_control(c) for c in value):
            case.path_parameters[name] = "".join(c for c in value if not _is_control(c)) or "x"
