/* A simulated network share: a read-only FUSE passthrough of SOURCE that waits DELAY_US microseconds
 * on every lookup, getattr and readdir, as an SMB or NFS client waits on a round trip to its server.
 * The kernel caches nothing (entry, attribute and negative timeouts are 0), so every stat of a file
 * costs at least one round trip, and the server's own cost per call stays far below the delay: a
 * parallel walk of the mount is bounded by the delay, not by this process.
 *
 *   simshare SOURCE MOUNTPOINT DELAY_US [fuse options]   (compiled by bench/share.py)
 */
#define FUSE_USE_VERSION 31
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char *source;
static long delay_us;

static void round_trip(void) {
    struct timespec ts = {delay_us / 1000000, (delay_us % 1000000) * 1000};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
}

static void real(char *out, const char *path) { snprintf(out, PATH_MAX, "%s%s", source, path); }

static void *sim_init(struct fuse_conn_info *conn, struct fuse_config *cfg) {
    (void)conn;
    cfg->entry_timeout = 0;
    cfg->attr_timeout = 0;
    cfg->negative_timeout = 0;
    cfg->use_ino = 1;
    return NULL;
}

static int sim_getattr(const char *path, struct stat *st, struct fuse_file_info *fi) {
    (void)fi;
    char full[PATH_MAX];
    real(full, path);
    round_trip();
    return lstat(full, st) == -1 ? -errno : 0;
}

static int sim_readlink(const char *path, char *buf, size_t size) {
    char full[PATH_MAX];
    real(full, path);
    round_trip();
    ssize_t n = readlink(full, buf, size - 1);
    if (n == -1) return -errno;
    buf[n] = '\0';
    return 0;
}

static int sim_access(const char *path, int mask) {
    char full[PATH_MAX];
    real(full, path);
    return access(full, mask) == -1 ? -errno : 0;
}

static int sim_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t offset, struct fuse_file_info *fi,
                       enum fuse_readdir_flags flags) {
    (void)offset, (void)fi, (void)flags;
    char full[PATH_MAX];
    real(full, path);
    round_trip();
    DIR *dir = opendir(full);
    if (dir == NULL) return -errno;
    struct dirent *de;
    while ((de = readdir(dir)) != NULL) {
        struct stat st;
        memset(&st, 0, sizeof st);
        st.st_ino = de->d_ino;
        st.st_mode = (mode_t)de->d_type << 12;
        if (fill(buf, de->d_name, &st, 0, 0)) break;
    }
    closedir(dir);
    return 0;
}

static int sim_open(const char *path, struct fuse_file_info *fi) {
    char full[PATH_MAX];
    real(full, path);
    int fd = open(full, fi->flags);
    if (fd == -1) return -errno;
    fi->fh = (uint64_t)fd;
    return 0;
}

static int sim_read(const char *path, char *buf, size_t size, off_t offset, struct fuse_file_info *fi) {
    (void)path;
    ssize_t n = pread((int)fi->fh, buf, size, offset);
    return n == -1 ? -errno : (int)n;
}

static int sim_release(const char *path, struct fuse_file_info *fi) {
    (void)path;
    close((int)fi->fh);
    return 0;
}

static int sim_statfs(const char *path, struct statvfs *st) {
    (void)path;
    return statvfs(source, st) == -1 ? -errno : 0;
}

static const struct fuse_operations ops = {
    .init = sim_init,
    .getattr = sim_getattr,
    .readlink = sim_readlink,
    .access = sim_access,
    .readdir = sim_readdir,
    .open = sim_open,
    .read = sim_read,
    .release = sim_release,
    .statfs = sim_statfs,
};

int main(int argc, char *argv[]) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s SOURCE MOUNTPOINT DELAY_US [fuse options]\n", argv[0]);
        return 2;
    }
    static char resolved[PATH_MAX];
    if (realpath(argv[1], resolved) == NULL) {
        perror(argv[1]);
        return 2;
    }
    source = resolved;
    delay_us = atol(argv[3]);
    char *args[64];
    int n = 0;
    args[n++] = argv[0];
    args[n++] = argv[2];
    args[n++] = "-f";
    args[n++] = "-o";
    args[n++] = "ro,fsname=simshare,subtype=simshare,max_threads=64";
    for (int i = 4; i < argc && n < 63; i++) args[n++] = argv[i];
    args[n] = NULL;
    return fuse_main(n, args, &ops, NULL);
}
