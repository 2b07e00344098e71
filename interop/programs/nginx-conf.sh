#!/bin/sh
# Prints an nginx configuration for the tests and benchmarks that run nginx (interop/preload-nginx.test.sh,
# interop/preload-fork-servers.test.sh, tools/bench-servers.sh): in the foreground, its pid, error log and temp
# files in DIR, serving ROOT on 127.0.0.1:PORT, with sendfile.
# Usage: nginx-conf.sh DIR PORT ROOT PROCESS-LINES [HTTP-LINES]
#   PROCESS-LINES, e.g. "master_process on; worker_processes 2;" or "master_process off;"
#   HTTP-LINES, more directives inside http {}, e.g. "keepalive_requests 1000000;"
#   NGINX_USER: the workers' user directive; by default "user root;" when run as root (the files are root's),
#   empty for nginx's own default (nobody).
set -eu
[ $# -ge 4 ] || { sed -n '5,9s/^# \{0,1\}//p' "$0" >&2; exit 2; }
dir=$1 port=$2 root=$3 processes=$4 http=${5:-}
user=${NGINX_USER-$([ "$(id -u)" = 0 ] && echo "user root;" || true)}
cat <<CONF
daemon off;
$processes
$user
pid $dir/nginx.pid;
error_log $dir/error.log info;
events { worker_connections 1024; }
http {
    access_log off;
    sendfile on;
    $http
    client_body_temp_path $dir/temp/body;
    proxy_temp_path $dir/temp/proxy;
    fastcgi_temp_path $dir/temp/fastcgi;
    uwsgi_temp_path $dir/temp/uwsgi;
    scgi_temp_path $dir/temp/scgi;
    types { text/plain txt; application/octet-stream bin; }
    server { listen 127.0.0.1:$port; root $root; }
}
CONF
