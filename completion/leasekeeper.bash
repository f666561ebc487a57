# bash completion for leasekeeper(1)                                    -*- shell-script -*-
#
# Installed as share/bash-completion/completions/leasekeeper (bash-completion loads it on first
# use), or sourced from ~/.bashrc. It works without the bash-completion package too, with plain
# file names where that package would filter them.
#
# The options come from the binary itself: the usage line that `leasekeeper COMMAND --help`
# prints (e.g. "usage: leasekeeper status [-s SOCKET] [-o wide|json|yaml] [--no-headers]
# [LOCK]"), with the other spelling of each option that has two (-s and --socket). An option
# followed there by a word in capitals or by lower-case words (`-o wide|json|yaml`) takes a
# value, and those words are its values. So the completion follows the binary on the line,
# whatever its version; the lists below serve only when that binary cannot be run. Lock names
# come from the running agent (`leasekeeper status`, given at most 2 s).

_leasekeeper_commands="agent check-config drain status watch run version help"

# Options with two spellings.
_leasekeeper_pairs="-s:--socket -c:--config -l:--lock -o:--output -h:--help"

# When the binary cannot be run: options that take a value, then all options, by command.
_leasekeeper_static_value_opts() {
	case $1 in
	agent) echo "-c --config --log-level" ;;
	check-config) echo "-c --config" ;;
	drain) echo "-s --socket --timeout" ;;
	status | watch) echo "-s --socket" ;;
	run) echo "-s --socket -l --lock" ;;
	esac
}

_leasekeeper_static_opts() {
	_leasekeeper_static_value_opts "$1"
	case $1 in
	status) echo "--json" ;;
	esac
	echo "-h --help"
}

# The first line of `leasekeeper CMD --help`; empty if the binary cannot say.
_leasekeeper_usage() {
	"$1" "$2" --help 2>/dev/null </dev/null | head -n 1 | grep '^usage:'
}

# The options a usage line names, one per line.
_leasekeeper_usage_opts() {
	grep -oE -- '(^|[][ |])--?[A-Za-z][-A-Za-z]*' <<<"$1" | sed -E 's/^[][ |]//'
}

# OPT as the usage line spells it (--socket may be written -s there).
_leasekeeper_spelling() {
	local usage=$1 opt=$2 p
	for p in $_leasekeeper_pairs; do
		if [ "$opt" = "${p#*:}" ] || [ "$opt" = "${p%%:*}" ]; then
			if _leasekeeper_usage_opts "$usage" | grep -qxF -- "${p%%:*}"; then
				echo "${p%%:*}"
			else
				echo "${p#*:}"
			fi
			return
		fi
	done
	echo "$opt"
}

# Every option of CMD.
_leasekeeper_opts() {
	local usage o p
	usage=$(_leasekeeper_usage "$1" "$2")
	if [ -z "$usage" ]; then
		printf '%s\n' $(_leasekeeper_static_opts "$2")
		return
	fi
	for o in $(_leasekeeper_usage_opts "$usage") -h; do
		echo "$o"
		for p in $_leasekeeper_pairs; do
			[ "$o" = "${p%%:*}" ] && echo "${p#*:}"
			[ "$o" = "${p#*:}" ] && echo "${p%%:*}"
		done
	done | sort -u
}

# Whether option OPT of CMD takes a value.
_leasekeeper_takes_value() {
	local usage o
	usage=$(_leasekeeper_usage "$1" "$2")
	if [ -z "$usage" ]; then
		for o in $(_leasekeeper_static_value_opts "$2"); do
			[ "$o" = "$3" ] && return 0
		done
		return 1
	fi
	o=$(_leasekeeper_spelling "$usage" "$3")
	grep -qE -- "(^|[][ |])$o ([A-Z]|[a-z0-9]+([]| ]|\$))" <<<"$usage"
}

# The values the usage line lists for OPT (`-o wide|json|yaml` gives wide json yaml).
_leasekeeper_values() {
	local usage o
	usage=$(_leasekeeper_usage "$1" "$2")
	[ -n "$usage" ] || return
	o=$(_leasekeeper_spelling "$usage" "$3")
	grep -oE -- "(^|[][ |])$o [a-z0-9]+(\|[a-z0-9]+)*([]| ]|\$)" <<<"$usage" | head -n 1 |
		sed -E 's/^[][ |]//; s/^[^ ]+ //; s/[] ]$//' | tr '|' ' '
}

# Lock names from the running agent, at the socket given on the line if any: the "name" of
# each entry of "locks", which "backend" follows (an entry of "backends" has "type" there).
_leasekeeper_locks() {
	local bin=$1 sock=$2 t=() json=(--json)
	command -v timeout >/dev/null 2>&1 && t=(timeout 2)
	_leasekeeper_usage "$bin" status | grep -qE -- '-o [a-z|]*json' && json=(-o json)
	"${t[@]}" "$bin" status ${sock:+-s "$sock"} "${json[@]}" 2>/dev/null </dev/null |
		grep -oE '"name":"[A-Za-z0-9._-]+","backend"' | sed -E 's/^"name":"//; s/",.*$//'
}

_leasekeeper_files() {
	if declare -F _filedir >/dev/null; then
		_filedir
	else
		local IFS=$'\n'
		COMPREPLY=($(compgen -f -- "$1"))
	fi
}

_leasekeeper() {
	local cur prev words cword split=false
	if declare -F _init_completion >/dev/null; then
		_init_completion -s || return
	else
		# bash splits --opt=value into three words; join them again, as bash-completion does.
		local j w
		words=()
		for ((j = 0; j < ${#COMP_WORDS[@]}; j++)); do
			w=${COMP_WORDS[j]}
			if ((j > 0)) && [[ ${words[-1]} == -* ]] &&
				[[ $w == = || ${words[-1]} == *= && ${COMP_WORDS[j - 1]} == = ]]; then
				words[-1]+=$w
			else
				words+=("$w")
			fi
			((j == COMP_CWORD)) && cword=$((${#words[@]} - 1))
		done
		cur=${words[cword]}
		prev=${words[cword - 1]}
		if [[ $cur == --*=* ]]; then
			prev=${cur%%=*}
			cur=${cur#*=}
			split=true
		fi
	fi
	local bin=${words[0]/#\~/$HOME} cmd i w sock= cmd_at=
	COMPREPLY=()

	if ((cword == 1)); then
		if [[ $cur == -* ]]; then
			COMPREPLY=($(compgen -W "-h --help --version" -- "$cur"))
		else
			COMPREPLY=($(compgen -W "$_leasekeeper_commands" -- "$cur"))
		fi
		return
	fi
	cmd=${words[1]}
	case $cmd in
	agent | check-config | drain | status | watch | run | version) ;;
	*) return ;;
	esac

	# Walk the words before the cursor: the socket named on the line, and for run where CMD
	# starts (after `--` or at the first word that is not an option or an option's value).
	for ((i = 2; i < cword; i++)); do
		w=${words[i]}
		case $w in
		-s | --socket) sock=${words[i + 1]} ;;
		--socket=*) sock=${w#*=} ;;
		esac
		if [ "$cmd" = run ]; then
			if [ "$w" = -- ]; then
				cmd_at=$((i + 1))
				break
			elif [[ $w == -* ]]; then
				[[ $w != *=* ]] && _leasekeeper_takes_value "$bin" run "$w" && ((i++))
			else
				cmd_at=$i
				break
			fi
		fi
	done
	# run: the word under the cursor starts CMD when it is not an option (or an option's value).
	if [ "$cmd" = run ] && [ -z "$cmd_at" ] && [[ $cur != -* ]] && ! $split &&
		! { [[ $prev == -* ]] && _leasekeeper_takes_value "$bin" run "$prev"; }; then
		cmd_at=$cword
	fi
	if [ -n "$cmd_at" ]; then
		if ((cmd_at == cword)); then
			COMPREPLY=($(compgen -c -- "$cur"))
		elif declare -F _command_offset >/dev/null; then
			_command_offset "$cmd_at"
		else
			_leasekeeper_files "$cur"
		fi
		return
	fi

	if [[ $prev == -* ]] && { $split || _leasekeeper_takes_value "$bin" "$cmd" "$prev"; }; then
		case $prev in
		-c | --config | -s | --socket) _leasekeeper_files "$cur" ;;
		-l | --lock)
			COMPREPLY=($(compgen -W "$(_leasekeeper_locks "$bin" "$sock")" -- "$cur")) ;;
		--timeout) COMPREPLY=($(compgen -W "10s 30s 1m" -- "$cur")) ;;
		*)
			w=$(_leasekeeper_values "$bin" "$cmd" "$prev")
			[ -z "$w" ] && [ "$prev" = --log-level ] && w="debug info warn error"
			COMPREPLY=($(compgen -W "$w" -- "$cur")) ;;
		esac
		return
	fi

	if [[ $cur == -* ]]; then
		COMPREPLY=($(compgen -W "$(_leasekeeper_opts "$bin" "$cmd")" -- "$cur"))
		return
	fi
	case $cmd in
	status | watch)
		COMPREPLY=($(compgen -W "$(_leasekeeper_locks "$bin" "$sock")" -- "$cur")) ;;
	esac
}

complete -F _leasekeeper leasekeeper
