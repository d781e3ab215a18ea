#!/usr/bin/env bash
# Install or upgrade bsepar panel on a Debian/Ubuntu server. Run as root from a checkout:
#
#   sudo bash deploy/install.sh                 # install, or upgrade to this checkout
#   sudo bash deploy/install.sh --rollback      # switch back to the previous release
#   sudo DOMAIN=panel.example.org bash deploy/install.sh
#
# Each release goes into its own directory, $APP_DIR/releases/<id>/, with its own venv; a
# `current` symlink is switched to it and the service is reloaded (HUP: new workers start on
# the new code while the old ones finish their chat streams), so an upgrade drops no request.
# The previous release is kept for --rollback. docs/operations.md has the whole story.
#
# Paths (each one is honoured by the systemd units, the nginx site, the env file and the
# bsepar-manage wrapper, which are rendered from deploy/ with them):
#   APP_USER (bsepar)  APP_DIR (/opt/bsepar-panel)  DATA_DIR (/var/lib/bsepar-panel)
#   CONF_DIR (/etc/bsepar-panel)  WORKSPACE_DIR ($DATA_DIR/workspace)  DOMAIN (panel.example.com)
#   PYTHON (/usr/bin/python3: the system interpreter, by absolute path)  KEEP_RELEASES (3)
#   NGINX_GROUP (www-data: the group of nginx's workers, which serve the attachments)
#
# Prefix mode, for tests and dry runs: PREFIX=/tmp/x puts every path under /tmp/x, installs no
# packages, creates no user (APP_USER must exist), runs no systemctl and reloads nothing but
# $RELOAD_CMD, if set. Unprivileged, it also changes no owner and runs commands as itself.
set -euo pipefail

ROLLBACK=0
for arg in "$@"; do
    case "$arg" in
        --rollback) ROLLBACK=1 ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown option $arg" >&2; exit 2 ;;
    esac
done

PREFIX=${PREFIX:-}
PREFIX=${PREFIX%/}
APP_USER=${APP_USER:-bsepar}
APP_DIR=${APP_DIR:-$PREFIX/opt/bsepar-panel}
DATA_DIR=${DATA_DIR:-$PREFIX/var/lib/bsepar-panel}
CONF_DIR=${CONF_DIR:-$PREFIX/etc/bsepar-panel}
WORKSPACE_DIR=${WORKSPACE_DIR:-$DATA_DIR/workspace}
ACME_DIR=${ACME_DIR:-$PREFIX/var/www/letsencrypt}
SYSTEMD_DIR=${SYSTEMD_DIR:-$PREFIX/etc/systemd/system}
NGINX_DIR=${NGINX_DIR:-$PREFIX/etc/nginx}
LETSENCRYPT_DIR=${LETSENCRYPT_DIR:-$PREFIX/etc/letsencrypt}
BIN_DIR=${BIN_DIR:-$PREFIX/usr/local/bin}
DOMAIN=${DOMAIN:-panel.example.com}
PYTHON=${PYTHON:-/usr/bin/python3}
KEEP_RELEASES=${KEEP_RELEASES:-3}
NGINX_GROUP=${NGINX_GROUP:-www-data}
RELOAD_CMD=${RELOAD_CMD:-}
SRC_DIR=$(cd "$(dirname "$0")/.." && pwd)

SYSTEM=1
[ -n "$PREFIX" ] && SYSTEM=0
ROOT=0
[ "$(id -u)" -eq 0 ] && ROOT=1

say() { echo "== $*"; }
die() { echo "install.sh: $*" >&2; exit 1; }

if [ "$SYSTEM" = 1 ] && [ "$ROOT" = 0 ]; then
    die "run it as root (or with PREFIX=/some/dir for a dry run)"
fi
case "$PYTHON" in
    /*) ;;
    *) die "PYTHON must be an absolute path (the system interpreter), not '$PYTHON'" ;;
esac
for path in "$APP_DIR" "$DATA_DIR" "$CONF_DIR"; do
    case "$path" in /*) ;; *) die "$path: paths must be absolute" ;; esac
done

if [ "$SYSTEM" = 1 ] && [ "$ROLLBACK" = 0 ]; then
    say "packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q python3 python3-venv nginx openssl rsync
fi
[ -x "$PYTHON" ] || die "$PYTHON is not an executable interpreter"

if [ "$SYSTEM" = 1 ]; then
    id -u "$APP_USER" >/dev/null 2>&1 || \
        useradd --system --home-dir "$DATA_DIR" --shell /usr/sbin/nologin "$APP_USER"
fi
id -u "$APP_USER" >/dev/null 2>&1 || die "user $APP_USER does not exist"
APP_GROUP=$(id -gn "$APP_USER")

# Owners change only when we can; an unprivileged dry run keeps its own.
own() { if [ "$ROOT" = 1 ]; then chown "$@"; fi; }
# Run a command as the service user (as ourselves in an unprivileged dry run).
as_user() {
    if [ "$ROOT" = 1 ]; then runuser -u "$APP_USER" -- "$@"; else "$@"; fi
}
# Run manage.py from a release, with the env file, as the service user.
manage() {
    export DJANGO_SETTINGS_MODULE=bsepar_panel.settings
    local release=$1; shift
    # The units' UMask: the database it may create is nobody else's (nginx's group passes
    # through the data directory).
    (umask 027 && cd "$release" && set -a && . "$CONF_DIR/env" && set +a && \
        as_user "$release/.venv/bin/python" manage.py "$@")
}
# The interpreter itself first: one the service user cannot run (under a root-only directory,
# like a root shell's pyenv) fails here, before a venv is built on it.
as_user "$PYTHON" -c 'import sys' 2>/dev/null || \
    die "$APP_USER cannot run $PYTHON (check the modes of its path); nothing was installed"

# The files in deploy/ name the default paths; rendered, they name this installation's.
render() {
    sed -e "s|/opt/bsepar-panel|$APP_DIR|g" \
        -e "s|/var/lib/bsepar-panel/workspace|$WORKSPACE_DIR|g" \
        -e "s|/var/lib/bsepar-panel|$DATA_DIR|g" \
        -e "s|/etc/bsepar-panel|$CONF_DIR|g" \
        -e "s|/var/www/letsencrypt|$ACME_DIR|g" \
        -e "s|/usr/local/bin/bsepar-manage|$BIN_DIR/bsepar-manage|g" \
        -e "s|panel\.example\.com|$DOMAIN|g" \
        -e "s|^User=bsepar$|User=$APP_USER|" \
        -e "s|^Group=bsepar$|Group=$APP_GROUP|" \
        -e "s|^APP_USER=bsepar$|APP_USER=$APP_USER|" \
        "$1"
}

say "directories"
install -d -m 0755 "$APP_DIR" "$APP_DIR/releases" "$APP_DIR/venvs"
own root:root "$APP_DIR" "$APP_DIR/releases" "$APP_DIR/venvs"
install -d -m 0750 "$DATA_DIR" "$DATA_DIR/media" "$WORKSPACE_DIR"
install -d -m 0700 "$DATA_DIR/backups"
own "$APP_USER:$APP_GROUP" "$DATA_DIR" "$DATA_DIR/media" "$WORKSPACE_DIR" "$DATA_DIR/backups"
install -d -m 0750 "$CONF_DIR"
own "root:$APP_GROUP" "$CONF_DIR"

# Attachments: nginx sends their bytes (X-Accel-Redirect to the site's internal location) once
# the panel has checked the owner, so nginx's group gets the least that works: it may pass
# through the data and media directories (x: no listing, and nothing in them is its group's
# but the attachments) and read the attachments tree. Its directories are setgid, so what the
# panel writes there keeps the group, and the panel writes files 0640 (FILE_UPLOAD_PERMISSIONS).
# Done at every run: it also brings the files of an install from before this into line.
say "attachments readable by nginx's group ($NGINX_GROUP)"
attachments="$DATA_DIR/media/attachments"
install -d -m 0750 "$attachments"
own "$APP_USER:$APP_GROUP" "$attachments"
if [ "$ROOT" = 1 ]; then
    getent group "$NGINX_GROUP" >/dev/null || \
        die "group $NGINX_GROUP (nginx's workers) does not exist: install nginx or set NGINX_GROUP"
    chgrp "$NGINX_GROUP" "$DATA_DIR" "$DATA_DIR/media"
    chmod 0710 "$DATA_DIR" "$DATA_DIR/media"
    # The files beside them (the SQLite database, made by an older installer with a looser
    # umask) are no one else's: nginx may now pass through to them. A running panel may
    # remove SQLite's -wal and -shm files between find and chmod: a file gone is not an error,
    # one that stays unchangeable is.
    find "$DATA_DIR" "$DATA_DIR/media" -maxdepth 1 -type f -exec sh -c \
        'for f; do chmod o-rwx "$f" 2>/dev/null || [ ! -e "$f" ] || exit 1; done' sh {} +
    chgrp -R "$NGINX_GROUP" "$attachments"
    chmod -R u+rwX,g=rX,o= "$attachments"
    find "$attachments" -type d -exec chmod g+s {} +
fi

# A venv per (requirements, interpreter): an upgrade that changes neither reuses it (no pip, no
# network); any change builds a new one beside it, so the running release's venv never changes
# under its workers. Built with $PYTHON by absolute path, never the first python3 on PATH (a
# root shell's pyenv interpreter is not executable by the service user: the old 203/EXEC).
venv_key() {
    local release=$1 real version
    real=$(readlink -f "$PYTHON")
    version=$("$PYTHON" -c 'import sys; print(sys.version)')
    { cat "$release/requirements.txt"; echo "$PYTHON"; echo "$real"; echo "$version"; } | sha256sum | cut -c1-16
}
ensure_venv() {
    local release=$1 key venv
    key=$(venv_key "$release")
    venv="$APP_DIR/venvs/$key"
    if [ -f "$venv/.complete" ] && "$venv/bin/python" -c 'import django, gunicorn' 2>/dev/null; then
        echo "venv $key reused"
    else
        echo "building venv $key with $PYTHON"
        # Built in place (a venv names its own path inside it); `.complete` is written last, so
        # an interrupted build is found and rebuilt next time.
        rm -rf "$venv"
        "$PYTHON" -m venv "$venv"
        # The venv module's own pip (ensurepip: nothing downloaded for pip itself); the
        # requirements come from the index configured for pip on this machine.
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
            --no-input -r "$release/requirements.txt"
        touch "$venv/.complete"
    fi
    own -R root:root "$venv"
    chmod -R u=rwX,go=rX "$venv"
    ln -sfn "../../venvs/$key" "$release/.venv"
}
# The service user must be able to run the release's interpreter and import the stack: this
# fails here, before the switch, instead of as 203/EXEC after it.
check_runnable() {
    local release=$1
    if ! (cd "$release" && as_user "$release/.venv/bin/python" -c \
            'import django, gunicorn, uvicorn_worker, bsepar_panel') ; then
        die "$APP_USER cannot run $release/.venv/bin/python (check the modes of its path); nothing was switched"
    fi
}
# Point `current` (and `previous`) at a release atomically: a rename replaces the symlink.
switch_link() {
    local name=$1 target=$2
    ln -sfn "$target" "$APP_DIR/.$name.new"
    mv -T "$APP_DIR/.$name.new" "$APP_DIR/$name"
}
server_pins() { grep -iE '^(gunicorn|uvicorn|uvicorn-worker|uvicorn\[.*\])[=<>~ ]' "$1/requirements.txt" || true; }
# The two app services: pages (and everything else), and the chat streams (nginx sends
# /ai-chat/stream/ there). Same code, same env file; each is started, reloaded or restarted.
SERVICES="bsepar-panel.service bsepar-panel-streams.service"
reload_service() {
    local from=$1 to=$2
    if [ "$SYSTEM" = 0 ]; then
        if [ -n "$RELOAD_CMD" ]; then
            say "reload: $RELOAD_CMD"
            sh -c "$RELOAD_CMD"
        fi
        return
    fi
    systemctl daemon-reload
    # States first, then one systemctl call per action: a restart or reload of bsepar-panel
    # propagates to the stream service (PartOf=, ReloadPropagatedFrom=), so naming both in one
    # call acts on each once.
    local unit inactive="" active=""
    for unit in $SERVICES; do
        if systemctl is-active --quiet "$unit"; then active="$active $unit"; else inactive="$inactive $unit"; fi
    done
    # Also the stream service's first start, on an upgrade from before it existed.
    [ -n "$inactive" ] && systemctl start $inactive
    [ -z "$active" ] && return
    if [ -z "$from" ]; then
        # Running, but not from a release: an install from before releases/ (its master has the
        # old unit's command line). Once, a restart moves it to current/.
        echo "moving the running service to $APP_DIR/current: restarting once"
        systemctl restart $active
    elif [ "$(server_pins "$from")" != "$(server_pins "$to")" ]; then
        # The gunicorn master keeps the server libraries it started with; new ones need a new
        # master. This is the one upgrade that restarts (open chat streams are cut).
        echo "gunicorn/uvicorn versions changed: restarting the services (not a reload)"
        systemctl restart $active
    else
        systemctl reload $active
    fi
}

previous_target=""
[ -L "$APP_DIR/current" ] && previous_target=$(readlink "$APP_DIR/current")

if [ "$ROLLBACK" = 1 ]; then
    [ -L "$APP_DIR/previous" ] || die "no previous release to roll back to"
    target=$(readlink "$APP_DIR/previous")
    [ -d "$APP_DIR/$target" ] || die "the previous release $APP_DIR/$target is gone"
    say "rollback to $target"
    # Its venv may have been built for an interpreter that has since changed.
    ensure_venv "$APP_DIR/$target"
    check_runnable "$APP_DIR/$target"
    switch_link current "$target"
    switch_link previous "$previous_target"
    reload_service "$APP_DIR/$previous_target" "$APP_DIR/$target"
    say "done: $APP_DIR/current -> $target (migrations are not undone: see docs/operations.md)"
    exit 0
fi

id=$(date -u +%Y%m%d-%H%M%S)
rev=$(git -C "$SRC_DIR" rev-parse --short HEAD 2>/dev/null || true)
[ -n "$rev" ] && id="$id-$rev"
n=1
base=$id
while [ -e "$APP_DIR/releases/$id" ]; do n=$((n + 1)); id="$base-$n"; done
release="$APP_DIR/releases/$id"

say "release $id (code read-only to the service user)"
mkdir "$release.partial"
# Only what runs: no tests, benchmarks, CI scripts, local data or secrets.
tar -C "$SRC_DIR" --exclude=./.git --exclude=./.venv --exclude=./.env --exclude=./staticfiles \
    --exclude='./db.sqlite3*' --exclude=./media --exclude=./backups --exclude=./tests \
    --exclude=./bench --exclude=./.ci --exclude=./test-artifacts --exclude='__pycache__' \
    --exclude='*.pyc' --exclude=./.pytest_cache --exclude=./.ruff_cache -cf - . \
    | tar -C "$release.partial" -xf -
mv "$release.partial" "$release"
own -R root:root "$release"
chmod -R u=rwX,go=rX "$release"
echo "$id" > "$release/RELEASE"

say "virtualenv"
ensure_venv "$release"
check_runnable "$release"

say "configuration"
if [ ! -f "$CONF_DIR/env" ]; then
    secret=$("$PYTHON" -c 'import secrets; print(secrets.token_urlsafe(50))')
    fkey=$("$PYTHON" -c 'import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())')
    umask 077
    render "$release/deploy/env.example" | sed -e "s|^SECRET_KEY=.*|SECRET_KEY=$secret|" \
        -e "s|^ENCRYPTION_KEYS=.*|ENCRYPTION_KEYS=$fkey|" > "$CONF_DIR/env"
    umask 022
    echo "Wrote $CONF_DIR/env: check ALLOWED_HOSTS and CSRF_TRUSTED_ORIGINS, and keep a copy"
    echo "of ENCRYPTION_KEYS somewhere safe: backups do not contain it."
else
    # Releases keep their static files: an old install's STATIC_ROOT outside them must go.
    sed -i -e "s|^STATIC_ROOT=$APP_DIR/staticfiles\$|# STATIC_ROOT is each release's own staticfiles/|" "$CONF_DIR/env"
fi
# nginx serves the attachments (see above): an env file from before that gets the setting,
# unless it says something about it already (an explicit `off` stays off), and only if the
# installed nginx site has the internal location (the installer never rewrites a site).
site="$NGINX_DIR/sites-available/bsepar-panel"
if ! grep -q '^[# ]*CHAT_ATTACHMENTS_X_ACCEL=' "$CONF_DIR/env"; then
    if [ ! -f "$site" ] || grep -q 'location /_attachments/' "$site"; then
        printf '%s\n' "# nginx sends the attachments' bytes from its internal /_attachments/ location." \
            "CHAT_ATTACHMENTS_X_ACCEL=on" >> "$CONF_DIR/env"
        echo "Added CHAT_ATTACHMENTS_X_ACCEL=on to $CONF_DIR/env"
    else
        echo "Note: $site has no internal /_attachments/ location (see deploy/nginx.conf):"
        echo "add it, then CHAT_ATTACHMENTS_X_ACCEL=on to $CONF_DIR/env; the panel sends the files itself until then."
    fi
fi
own "root:$APP_GROUP" "$CONF_DIR/env"
chmod 0640 "$CONF_DIR/env"

say "static files"
(cd "$release" && set -a && . "$CONF_DIR/env" && set +a && \
    "$release/.venv/bin/python" manage.py collectstatic --noinput --verbosity 0)
if [ -n "$previous_target" ] && [ -d "$APP_DIR/$previous_target/staticfiles" ]; then
    # Pages rendered by the draining workers name the previous release's hashed files: keep
    # them reachable (new files win; only missing names are copied).
    cp -rn "$APP_DIR/$previous_target/staticfiles/." "$release/staticfiles/"
fi
own -R root:root "$release/staticfiles"
chmod -R u=rwX,go=rX "$release/staticfiles"

say "database"
# Migrations run before the switch, while the previous release still serves: a migration that
# the running code cannot live with needs the two-step upgrade in docs/operations.md.
manage "$release" migrate --noinput
manage "$release" ensure_admin

say "systemd units, nginx site, bsepar-manage"
install -d -m 0755 "$SYSTEMD_DIR" "$BIN_DIR" "$NGINX_DIR/sites-available" "$NGINX_DIR/sites-enabled" \
    "$ACME_DIR" "$LETSENCRYPT_DIR/renewal-hooks/deploy"
for unit in bsepar-panel.service bsepar-panel-streams.service bsepar-panel-cleanup.service \
        bsepar-panel-cleanup.timer bsepar-panel-backup.service bsepar-panel-backup.timer \
        bsepar-panel-orphans.service bsepar-panel-orphans.timer; do
    render "$release/deploy/$unit" > "$SYSTEMD_DIR/$unit"
    chmod 0644 "$SYSTEMD_DIR/$unit"
done
render "$release/deploy/bsepar-manage" > "$BIN_DIR/bsepar-manage"
chmod 0755 "$BIN_DIR/bsepar-manage"
render "$release/deploy/certbot-deploy-hook.sh" > "$LETSENCRYPT_DIR/renewal-hooks/deploy/bsepar-panel"
chmod 0755 "$LETSENCRYPT_DIR/renewal-hooks/deploy/bsepar-panel"

# Until certbot has issued a certificate the site uses a self-signed one, so `nginx -t` passes
# and port 80 can answer the ACME challenge; the deploy hook then points tls/ at Let's Encrypt.
install -d -m 0755 "$CONF_DIR/tls"
if [ ! -e "$CONF_DIR/tls/fullchain.pem" ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=$DOMAIN" \
        -keyout "$CONF_DIR/tls/selfsigned.key" -out "$CONF_DIR/tls/selfsigned.pem" 2>/dev/null
    chmod 0600 "$CONF_DIR/tls/selfsigned.key"
    ln -sfn selfsigned.pem "$CONF_DIR/tls/fullchain.pem"
    ln -sfn selfsigned.key "$CONF_DIR/tls/privkey.pem"
    echo "Made a temporary self-signed certificate; get a real one with docs/operations.md"
fi
site="$NGINX_DIR/sites-available/bsepar-panel"
if [ ! -f "$site" ]; then
    http2=""
    if [ "$SYSTEM" = 1 ] || command -v nginx >/dev/null; then
        http2=$(nginx -v 2>&1 | sed -n 's|.*nginx/\([0-9.]*\).*|\1|p')
    fi
    render "$release/deploy/nginx.conf" > "$site"
    # nginx 1.25.1 deprecated `listen ... http2` for the `http2 on;` directive.
    if [ -n "$http2" ] && printf '%s\n1.25.1\n' "$http2" | sort -V -C -r 2>/dev/null; then
        sed -i -e 's|listen \(.*\) ssl http2;|listen \1 ssl;|' \
            -e 's|^\(    ssl_certificate  *[^_].*\)$|    http2 on;\n\1|' "$site"
    fi
    chmod 0644 "$site"
    echo "Installed the nginx site for $DOMAIN ($site)."
elif ! grep -q "upstream bsepar_streams" "$site"; then
    # An existing site is never overwritten (it may hold local changes): until it sends the
    # stream locations to the stream service, every request goes to the page service as before.
    echo "Note: $site predates the stream service (bsepar-panel-streams, 127.0.0.1:8001): the"
    echo "panel works as before; add its upstream and stream location from $release/deploy/nginx.conf"
    echo "(docs/operations.md, \"Pages and streams\") so that streams no longer slow pages down."
fi
ln -sfn ../sites-available/bsepar-panel "$NGINX_DIR/sites-enabled/bsepar-panel"
# Debian's default site answers every unknown name on port 80 (and would win the ACME
# challenge for a bare IP): the panel's site replaces it. Only the link is removed.
if [ -L "$NGINX_DIR/sites-enabled/default" ]; then
    rm -f "$NGINX_DIR/sites-enabled/default"
fi

say "switch"
switch_link current "releases/$id"
[ -n "$previous_target" ] && switch_link previous "$previous_target"
if [ "$SYSTEM" = 1 ]; then
    systemctl daemon-reload
    systemctl enable $SERVICES
    systemctl enable --now bsepar-panel-cleanup.timer bsepar-panel-backup.timer \
        bsepar-panel-orphans.timer
fi
reload_service "${previous_target:+$APP_DIR/$previous_target}" "$release"
if [ "$SYSTEM" = 1 ]; then
    nginx -t && systemctl reload-or-restart nginx
fi
if [ -f "$APP_DIR/manage.py" ]; then
    echo "Note: $APP_DIR still holds an install from before releases/ (manage.py, .venv, ...);"
    echo "the service no longer uses it: remove those files once the panel runs from current/."
fi

say "old releases"
# Keep current, previous and the newest $KEEP_RELEASES; then every venv no release uses.
keep=$(ls -1 "$APP_DIR/releases" | sort -r | head -n "$KEEP_RELEASES")
cur=$(basename "$(readlink "$APP_DIR/current")")
prev=""
[ -L "$APP_DIR/previous" ] && prev=$(basename "$(readlink "$APP_DIR/previous")")
for old in "$APP_DIR"/releases/*; do
    name=$(basename "$old")
    case "$name" in *.partial) rm -rf "$old"; continue ;; esac
    if [ "$name" != "$cur" ] && [ "$name" != "$prev" ] && ! grep -qx "$name" <<<"$keep"; then
        rm -rf "$old"
    fi
done
used=$(for r in "$APP_DIR"/releases/*/.venv; do basename "$(readlink "$r")"; done)
for venv in "$APP_DIR"/venvs/*; do
    [ -e "$venv" ] || continue
    grep -qx "$(basename "$venv")" <<<"$used" || rm -rf "$venv"
done
say "done: $APP_DIR/current -> releases/$id"
