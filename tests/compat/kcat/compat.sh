#!/usr/bin/env bash
# sluice compatibility scenario for kcat (librdkafka): produce and consume only.
#
#   compat.sh HOST:PORT PYTHON [topic]
#
# kcat has no admin API, so the topic is created and deleted through the
# kafka-python helper in ../python/compat.py (PYTHON is the venv's python);
# kcat's own part is produce (idempotent, every codec), balanced-group consume
# with offset commit, and `kcat -L` for the topic list.  Prints
# `compat: kcat <step> PASS|FAIL|SKIP <detail>` lines; exits 0 whatever the results.
set -uo pipefail

B="$1"; PY="$2"; T="${3:-compat-kcat-$$}"; G="$T-group"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
HELPER="$HERE/../python/compat.py"
TMP="$(mktemp -d)"; trap 'rm -rf "$TMP"' EXIT
TOTAL=200; CODECS=(gzip snappy lz4 zstd)

report() { local d; d="$(echo "${3:-}" | tr -s '\n\t ' ' ')"; echo "compat: kcat $1 $2 ${d% }"; }
errtail() { grep -v '^\s*$' "$1" | tail -n 3 | tr '\n' ' '; }
value_of() { local x=""; (( $1 % 50 )) && x="$(printf 'x%.0s' $(seq 1 $(( $1 % 50 ))))"; printf 'kcat|%d|%s|%s' "$1" "$2" "$x"; }
partitions_listed() {  # number of partitions kcat -L shows for $T (0 if not listed)
    timeout 20 kcat -b "$B" -L -t "$T" -J 2>/dev/null | "$PY" -c '
import json, sys
md = json.load(sys.stdin)
t = [x for x in md.get("topics", []) if x["topic"] == sys.argv[1] and not x.get("err")]
print(len(t[0]["partitions"]) if t else 0)' "$T" 2>/dev/null || echo 0
}
topic_in_list() { timeout 20 kcat -b "$B" -L -J 2>/dev/null | "$PY" -c '
import json, sys
print(any(x["topic"] == sys.argv[1] for x in json.load(sys.stdin).get("topics", [])))' "$T"; }

# 1. create: no CreateTopics in kcat.
if timeout 60 "$PY" "$HELPER" --helper create-topic --bootstrap "$B" --topic "$T" >"$TMP/h.out" 2>&1; then
    n=0
    for _ in $(seq 1 50); do n="$(partitions_listed)"; [ "$n" = 3 ] && break; sleep 0.2; done
    if [ "$n" = 3 ]; then
        report create SKIP "kcat has no CreateTopics; topic created with kafka-python helper, kcat -L shows 3 partitions"
    else
        report create FAIL "kcat -L shows $n partitions for $T, want 3"
    fi
else
    report create FAIL "setup helper (kafka-python) failed: $(errtail "$TMP/h.out")"
fi

# 2. produce: one kcat run per codec, idempotent, acks=all.
per=$(( TOTAL / ${#CODECS[@]} )); i=0; ok=1; detail=""
: > "$TMP/want"
for codec in "${CODECS[@]}"; do
    : > "$TMP/in"
    for ((k = 0; k < per; k++, i++)); do
        printf 'k%d:%s\n' "$i" "$(value_of "$i" "$codec")" | tee -a "$TMP/want" >> "$TMP/in"
    done
    if ! timeout 60 kcat -b "$B" -P -t "$T" -K: -z "$codec" -X enable.idempotence=true -X acks=all \
            -X linger.ms=20 < "$TMP/in" > "$TMP/p.out" 2>&1 || grep -qiE 'fail|error' "$TMP/p.out"; then
        ok=0; detail="$codec: $(errtail "$TMP/p.out")"; break
    fi
done
if ((ok)); then
    report produce PASS "$TOTAL msgs idempotent acks=all codecs=$(IFS=,; echo "${CODECS[*]}")"
else
    report produce FAIL "$detail"
fi

# 3. consume with a balanced consumer group; kcat commits (auto commit) on close.
timeout 60 kcat -b "$B" -G "$G" "$T" -e -c "$TOTAL" -f '%k:%s\n' -q -X auto.offset.reset=earliest \
    -X enable.auto.commit=true > "$TMP/got" 2> "$TMP/c.err"; rc=$?
if [ "$(sort "$TMP/got")" != "$(sort "$TMP/want")" ]; then
    report consume FAIL "kcat exit $rc; consumed $(wc -l < "$TMP/got") messages, want $TOTAL (or content differs); $(errtail "$TMP/c.err")"
else
    committed="$(timeout 60 "$PY" "$HELPER" --helper committed --bootstrap "$B" --topic "$T" 2>"$TMP/h.err")"
    if [ "$committed" = "$TOTAL" ]; then
        report consume PASS "$TOTAL msgs checked, group $G committed $TOTAL (checked with kafka-python)"
    else
        report consume FAIL "consumed all $TOTAL but committed offsets sum to '${committed}' $(errtail "$TMP/h.err")"
    fi
fi

# 4, 5: no admin API in kcat.
report configs SKIP "kcat has no DescribeConfigs/AlterConfigs"
report delete-records SKIP "kcat has no DeleteRecords"

# 6. delete: no DeleteTopics in kcat; deleted with the helper, kcat -L must stop listing it.
if timeout 60 "$PY" "$HELPER" --helper delete-topic --bootstrap "$B" --topic "$T" >"$TMP/h.out" 2>&1; then
    listed=True
    for _ in $(seq 1 50); do listed="$(topic_in_list)"; [ "$listed" = False ] && break; sleep 0.2; done
    if [ "$listed" = False ]; then
        report delete-topic SKIP "kcat has no DeleteTopics; deleted with kafka-python helper, gone from kcat -L"
    else
        report delete-topic FAIL "deleted with kafka-python helper but kcat -L still lists $T"
    fi
else
    report delete-topic FAIL "setup helper (kafka-python) delete failed: $(errtail "$TMP/h.out")"
fi
exit 0
