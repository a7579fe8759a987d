#!/bin/sh
# Container entrypoint for the replicator image.
#
#   docker run IMAGE                      -> replicator run [--config FILE]
#   docker run IMAGE status --json        -> replicator status [--config FILE] --json
#   docker run IMAGE --log-level debug    -> replicator run [--config FILE] --log-level debug
#   docker run IMAGE --help | --version   -> replicator --help | --version
#
# Every command that loads a configuration (run, check-config, status, verify, backfill, redrive,
# lambda-filters) gets --config; others (config-schema, demo) are passed through unchanged.
#
# Config: if REPLICATOR_CONFIG (default /etc/replicator/config.yaml) names an existing file, it is
# passed as --config; REPLICATOR_<SECTION>__<KEY> variables still override its keys. With no file
# the replicator is configured from the environment alone. An explicitly set REPLICATOR_CONFIG
# that does not exist is an error: a failed volume/secret mount must not silently fall back to env.
#
# The last step is `exec`, so the replicator replaces this shell and receives SIGTERM directly
# from tini (PID 1): it then drains in-flight writes and saves checkpoints before exiting.
set -eu

default_config=/etc/replicator/config.yaml
config=${REPLICATOR_CONFIG-$default_config}

# Subcommands that load a configuration and so accept --config. Others pass through untouched.
config_commands=" run check-config status verify backfill redrive lambda-filters "

if [ "$#" -eq 0 ]; then
    set -- run
elif [ "$1" = "replicator" ]; then
    # `docker run IMAGE replicator ...` works too.
    shift
    if [ "$#" -eq 0 ]; then
        set -- run
    fi
fi

case "$1" in
    --help | -h | --version) exec replicator "$@" ;;
    -*) set -- run "$@" ;; # options only: they belong to the default subcommand
    *) ;;
esac

case "$config_commands" in
    *" $1 "*) ;;
    *) exec replicator "$@" ;;
esac

for arg in "$@"; do
    case "$arg" in
        --config | --config=*) exec replicator "$@" ;; # the caller chose a config: keep it
        *) ;;
    esac
done

if [ -z "$config" ]; then
    # REPLICATOR_CONFIG="" asks for environment-only configuration.
    exec replicator "$@"
fi

if [ -e "$config" ]; then
    # -e, not -r: an unreadable mount is passed on so the replicator names the file and the reason.
    subcommand=$1
    shift
    exec replicator "$subcommand" --config "$config" "$@"
fi

if [ "${REPLICATOR_CONFIG+set}" = set ]; then
    echo "entrypoint: REPLICATOR_CONFIG=$config does not exist" >&2
    exit 78 # EX_CONFIG
fi

exec replicator "$@"
