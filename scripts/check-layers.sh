#!/usr/bin/env bash
# Checks the layering anyone can read off the code:
# - no crate below the control plane (prism-admin) depends on it: only the
#   `prism` binary does;
# - no module cycle inside any crate (a module's `crate::…` uses form a
#   graph that `tsort` must be able to order).
# Exit 1 with what is wrong; silent and 0 when all holds.
set -euo pipefail
cd "$(dirname "$0")/.."

status=0

dependents=$(cargo tree --workspace --locked -e normal -i prism-admin --prefix none 2>/dev/null |
  awk '{print $1}' | sort -u | grep -v '^prism-admin$' || true)
if [ "$dependents" != "prism" ]; then
  echo "check-layers: crates that depend on prism-admin (only prism may):" >&2
  echo "$dependents" >&2
  status=1
fi

for src in crates/*/src; do
  edges=$(mktemp)
  for file in "$src"/*.rs; do
    module=$(basename "$file" .rs)
    case "$module" in lib | main) continue ;; esac
    # `use crate::a::…`, `crate::a::f()`, `use crate::{a, b}` (first level
    # only), in the module's code: its unit tests may use anything.
    awk '/^#\[cfg\(test\)\]/ { exit } { print }' "$file" | grep -v '^\s*//' |
      grep -oE 'crate::(\{[^}]*\}|[a-z_][a-z0-9_]*)' |
      sed -E 's/^crate:://; s/[{}]//g' | tr ',' '\n' | sed -E 's/^\s+//; s/:.*//' |
      grep -E '^[a-z_][a-z0-9_]*$' | sort -u |
      while read -r used; do
        if [ "$used" != "$module" ] && [ -f "$src/$used.rs" ]; then
          echo "$module $used"
        fi
      done >>"$edges" || true
  done
  if ! tsort "$edges" >/dev/null 2>"$edges.err"; then
    echo "check-layers: module cycle in $src:" >&2
    grep -v 'input contains a loop' "$edges.err" | sed 's/^tsort: /  /' >&2
    status=1
  fi
  rm -f "$edges" "$edges.err"
done

exit $status
