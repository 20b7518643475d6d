#!/bin/sh
# check_deps.sh - enforce the one-way module dependencies of docs/ARCHITECTURE.md:
# a module may include only the modules listed for it (plus its own headers
# and include/v4flash.h). Prints each violation; exit 1 if any.
allowed() {
    case "$1" in
    core) echo "core" ;;
    gguf) echo "core gguf" ;;
    quant) echo "core quant" ;;
    json) echo "core json" ;;
    backend) echo "core quant backend" ;;
    model) echo "core gguf quant backend model" ;;
    sampler) echo "core sampler" ;;
    tokenizer) echo "core gguf json tokenizer" ;;
    kvstore) echo "core kvstore" ;;
    engine) echo "core gguf quant backend model sampler tokenizer json kvstore engine" ;;
    server) echo "core gguf quant backend model sampler tokenizer json kvstore engine server" ;;
    *) echo "" ;;
    esac
}
bad=0
for f in $(find src -name '*.[ch]' -o -name '*.cu' -o -name '*.cuh' | sort); do
    mod=$(echo "$f" | cut -d/ -f2)
    ok=$(allowed "$mod")
    for inc in $(grep -hoE '^#include "[a-z_]+/' "$f" | sed -E 's/#include "([a-z_]+)\//\1/'); do
        case " $ok " in
        *" $inc "*) ;;
        *) echo "check-deps: $f includes module '$inc' (allowed: $ok)"; bad=1 ;;
        esac
    done
done
[ $bad -eq 0 ] && echo "check-deps: ok"
exit $bad
