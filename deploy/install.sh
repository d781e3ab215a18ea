#!/usr/bin/env bash
# Install or upgrade bsepar panel on a Debian/Ubuntu server. Run as root from a checkout:
#   sudo bash deploy/install.sh            # installs to /opt/bsepar-panel
# Re-running it upgrades in place: code is re-copied, the venv updated, migrations run,
# static files collected and the service restarted. The env file and data are kept.
set -euo pipefail

APP_USER=${APP_USER:-bsepar}
APP_DIR=${APP_DIR:-/opt/bsepar-panel}
DATA_DIR=${DATA_DIR:-/var/lib/bsepar-panel}
CONF_DIR=${CONF_DIR:-/etc/bsepar-panel}
SRC_DIR=$(cd "$(dirname "$0")/.." && pwd)

if [ "$(id -u)" -ne 0 ]; then
    echo "install.sh must run as root" >&2
    exit 1
fi

echo "== packages"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q python3 python3-venv python3-pip nginx rsync

echo "== user and directories"
id -u "$APP_USER" >/dev/null 2>&1 || useradd --system --home-dir "$DATA_DIR" --shell /usr/sbin/nologin "$APP_USER"
install -d -o root -g root -m 0755 "$APP_DIR"
install -d -o "$APP_USER" -g "$APP_USER" -m 0750 "$DATA_DIR"
install -d -o root -g "$APP_USER" -m 0750 "$CONF_DIR"

echo "== code (read-only to the service user)"
rsync -a --delete --exclude .git --exclude .venv --exclude .env --exclude staticfiles \
    --exclude db.sqlite3 "$SRC_DIR/" "$APP_DIR/"
chown -R root:root "$APP_DIR"
chmod -R u=rwX,go=rX "$APP_DIR"

echo "== virtualenv"
[ -x "$APP_DIR/.venv/bin/python" ] || python3 -m venv "$APP_DIR/.venv"
"$APP_DIR/.venv/bin/pip" install --quiet --upgrade pip
"$APP_DIR/.venv/bin/pip" install --quiet -r "$APP_DIR/requirements.txt"
# The venv stays owned by root and executable by everyone; the service cannot change it.
chmod -R u=rwX,go=rX "$APP_DIR/.venv"

echo "== configuration"
if [ ! -f "$CONF_DIR/env" ]; then
    secret=$("$APP_DIR/.venv/bin/python" -c 'import secrets; print(secrets.token_urlsafe(50))')
    fkey=$("$APP_DIR/.venv/bin/python" -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')
    sed -e "s|^SECRET_KEY=.*|SECRET_KEY=$secret|" -e "s|^ENCRYPTION_KEYS=.*|ENCRYPTION_KEYS=$fkey|" \
        -e "s|^ALLOWED_HOSTS=.*|ALLOWED_HOSTS=$(hostname -f),localhost|" \
        "$APP_DIR/deploy/env.example" > "$CONF_DIR/env"
    echo "Wrote $CONF_DIR/env: edit ALLOWED_HOSTS and CSRF_TRUSTED_ORIGINS for your domain."
fi
chown root:"$APP_USER" "$CONF_DIR/env"
chmod 0640 "$CONF_DIR/env"

manage() {
    (cd "$APP_DIR" && set -a && . "$CONF_DIR/env" && set +a && \
        runuser -u "$APP_USER" -- "$APP_DIR/.venv/bin/python" manage.py "$@")
}

echo "== static files"
install -d -o root -g root -m 0755 "$APP_DIR/staticfiles"
(cd "$APP_DIR" && set -a && . "$CONF_DIR/env" && set +a && \
    "$APP_DIR/.venv/bin/python" manage.py collectstatic --noinput --verbosity 0)
chmod -R u=rwX,go=rX "$APP_DIR/staticfiles"

echo "== database"
manage migrate --noinput
manage ensure_admin

echo "== systemd and nginx"
install -m 0644 "$APP_DIR/deploy/bsepar-panel.service" /etc/systemd/system/bsepar-panel.service
install -m 0644 "$APP_DIR/deploy/bsepar-panel-cleanup.service" /etc/systemd/system/bsepar-panel-cleanup.service
install -m 0644 "$APP_DIR/deploy/bsepar-panel-cleanup.timer" /etc/systemd/system/bsepar-panel-cleanup.timer
if [ ! -f /etc/nginx/sites-available/bsepar-panel ]; then
    install -m 0644 "$APP_DIR/deploy/nginx.conf" /etc/nginx/sites-available/bsepar-panel
    echo "Installed the nginx site: set server_name and certificates, then link it into sites-enabled."
fi
systemctl daemon-reload
systemctl enable bsepar-panel.service
systemctl enable --now bsepar-panel-cleanup.timer
systemctl restart bsepar-panel.service
nginx -t && systemctl reload nginx || true
echo "== done: bsepar panel is running (systemctl status bsepar-panel)"
