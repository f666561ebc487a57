#!/bin/bash
# The bash completion as installed: usage: completion.sh COMPLETION_FILE LEASEKEEPER_BINARY.
# Each case completes a command line at its end, with and without the bash-completion package
# loaded, and compares the candidates (sorted, unique) with what is expected. The lock names
# come from a real agent (no backend needed: it answers STATUS while Redis is unreachable).
set -u
abs() { case $1 in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
file=$(abs "$1")
bin=$(abs "$2")
bc=/usr/share/bash-completion/bash_completion
[ -r "$file" ] || { echo "completion: $file is missing" >&2; exit 1; }
[ -r "$bc" ] || { echo "completion: $bc is missing (apt-get install bash-completion)" >&2; exit 1; }
bash -n "$file" || exit 1
dir=$(mktemp -d)
agent=
trap '[ -n "$agent" ] && kill "$agent" 2>/dev/null; wait; rm -rf "$dir"' EXIT
mkdir "$dir/bin"
ln -s "$bin" "$dir/bin/leasekeeper"
touch "$dir/lk.yaml"

# complete WITH_BC WORD... : prints the candidates for the last WORD, one line.
complete_words()
{
	(
		cd "$dir" || exit 1
		PATH="$dir/bin:$PATH"
		[ "$1" = 1 ] && . "$bc"
		shift
		. "$file"
		COMP_WORDS=("$@")
		COMP_CWORD=$(($# - 1))
		# The line as typed: bash splits --opt=value into the words --opt, = and value.
		COMP_LINE="$*"
		COMP_LINE=${COMP_LINE// = /=}
		COMP_LINE=${COMP_LINE// =/=}
		COMP_POINT=${#COMP_LINE}
		COMPREPLY=()
		_leasekeeper leasekeeper "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}"
		printf '%s\n' "${COMPREPLY[@]}" | sed '/^$/d' | sort -u | tr '\n' ' ' | sed 's/ $//'
	)
}

failed=0
# expect WANT WORD... : exactly WANT; expect_has WANT WORD... : WANT among the candidates.
check()
{
	mode=$1 want=$2
	shift 2
	for with in 0 1; do
		got=$(complete_words "$with" "$@")
		case $mode in
		exact) [ "$got" = "$want" ] && continue ;;
		has) case " $got " in *" $want "*) continue ;; esac ;;
		esac
		echo "completion: '$*' (bash-completion $with): got '$got', want $mode '$want'" >&2
		failed=1
	done
}

check exact "agent check-config drain help run status version watch" leasekeeper ""
check exact "--help --version -h" leasekeeper -
check exact "check-config" leasekeeper ch
check exact "--config --help --log-level -c -h" leasekeeper agent -
check exact "debug error info warn" leasekeeper agent --log-level ""
check exact "warn" leasekeeper agent --log-level = w
check exact "lk.yaml" leasekeeper check-config -c lk
check exact "--help --socket --timeout -h -s" leasekeeper drain -
check exact "--help --lock --socket -h -l -s" leasekeeper run -
check exact "--help -h" leasekeeper version -
# status and watch are growing options: every option their usage line names, with its other
# spelling, and the values it lists.
for cmd in status watch; do
	usage=$("$bin" "$cmd" --help | head -n 1)
	want=$(for o in $(grep -oE '(^|[][ |])--?[A-Za-z][-A-Za-z]*' <<<"$usage" |
		sed -E 's/^[][ |]//') -h; do
		echo "$o"
		case $o in
		-s) echo --socket ;; -o) echo --output ;; -h) echo --help ;;
		esac
	done | sort -u | tr '\n' ' ' | sed 's/ $//')
	check exact "$want" leasekeeper "$cmd" -
	if grep -q -- '-o ' <<<"$usage"; then
		want=$(grep -oE -- '-o [a-z|]+' <<<"$usage" | sed 's/^-o //' | tr '|' '\n' | sort |
			tr '\n' ' ' | sed 's/ $//')
		check exact "$want" leasekeeper "$cmd" -o ""
		check exact "$want" leasekeeper "$cmd" --output = ""
	fi
done
# run: CMD and CMD's own arguments, after the options or after --.
check has echo leasekeeper run --lock x ech
check has echo leasekeeper run -l x -- ech
check has echo leasekeeper run --lock = x ech

# Lock names from a running agent, at the socket on the line or in $LEASEKEEPER_SOCKET.
cat >"$dir/agent.yaml" <<YAML
socket: $dir/a.sock
http_listen: ""
backends:
  - name: main
    type: redis
    address: "127.0.0.1:1"
locks:
  - name: scheduler
  - name: reports
YAML
"$bin" agent -c "$dir/agent.yaml" 2>"$dir/agent.log" &
agent=$!
for _ in $(seq 100); do [ -S "$dir/a.sock" ] && break; sleep 0.05; done
check exact "reports scheduler" leasekeeper status -s "$dir/a.sock" ""
check exact "scheduler" leasekeeper watch --socket = "$dir/a.sock" s
LEASEKEEPER_SOCKET="$dir/a.sock" check exact "reports scheduler" leasekeeper run --lock ""
kill "$agent"
wait "$agent" 2>/dev/null
agent=

[ "$failed" = 0 ] || exit 1
echo "completion: ok"
