#!/usr/bin/env bash
# Single-node capture demo (the seed's "Quick Start"): make 3 short clips,
# start the collector, transcode the clips through 'tracekit ffmpeg' (which
# runs them through 'tracekit wrap'), stop the collector, show where the data
# is. The collector is stopped even if a transcode fails.
set -euo pipefail

TRACEKIT=${TRACEKIT:-tracekit}
RUN_ID=${RUN_ID:-demo-$(date -u +%Y%m%dT%H%M%SZ)}
DEMO_DIR=${DEMO_DIR:-demo}
export TRACEKIT_LOGS_DIR=${LOGS_DIR:-${TRACEKIT_LOGS_DIR:-logs}}

"$TRACEKIT" inputs generate -o "$DEMO_DIR/inputs" --count 3 --durations 2,3,4 --size 640x360 --seed 7

"$TRACEKIT" collect start --run-id "$RUN_ID" --stage cloud --interval-ms 100 --match '^ffmpeg$|^ffprobe$'
trap '"$TRACEKIT" collect stop --run-id "$RUN_ID"' EXIT

for clip in "$DEMO_DIR"/inputs/*.mp4; do
  "$TRACEKIT" ffmpeg --run-id "$RUN_ID" --scale 320:180 "$clip" "$DEMO_DIR/outputs/$RUN_ID/$(basename "$clip")"
done

"$TRACEKIT" collect stop --run-id "$RUN_ID"
trap - EXIT
run_folder="$TRACEKIT_LOGS_DIR/$RUN_ID"
echo
echo "run $RUN_ID captured in $run_folder:"
for file in node.json host.csv host_cpus.csv proc.csv processes.jsonl events.ffmpeg.jsonl collector.jsonl; do
  printf '  %-22s %6s lines\n' "$file" "$(wc -l < "$run_folder/$file")"
done
