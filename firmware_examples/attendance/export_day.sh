#!/usr/bin/env bash
# Export today's (or the given day's) check-ins to attendance-YYYY-MM-DD.csv.
#   ./export_day.sh [YYYY-MM-DD] [extra edge-verify options, e.g. --store FILE]
set -euo pipefail
day="${1:-$(date +%F)}"
shift || true
next_day="$(date -d "$day + 1 day" +%F)"   # GNU date: the export holds that one day, not everything since
edge-verify audit --command kiosk --since "$day" --until "$next_day" --csv "attendance-$day.csv" "$@"
