#!/bin/sh
# certbot deploy hook (installed as /etc/letsencrypt/renewal-hooks/deploy/bsepar-panel): after
# the panel's certificate is issued or renewed, point the site's tls/ links at it (the first time
# they name the installer's temporary self-signed certificate) and reload nginx, if its
# configuration passes `nginx -t`. Other certificates on the machine are left alone.
set -eu
CONF_DIR=/etc/bsepar-panel
DOMAIN=panel.example.com

lineage=${RENEWED_LINEAGE:-}
[ -n "$lineage" ] && [ "$(basename "$lineage")" = "$DOMAIN" ] || exit 0
ln -sfn "$lineage/fullchain.pem" "$CONF_DIR/tls/fullchain.pem"
ln -sfn "$lineage/privkey.pem" "$CONF_DIR/tls/privkey.pem"
if nginx -t -q; then
    systemctl reload nginx
else
    echo "bsepar-panel deploy hook: nginx -t failed, nginx not reloaded" >&2
    exit 1
fi
