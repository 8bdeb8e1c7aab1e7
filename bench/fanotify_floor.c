/*
 * The floor of any fanotify exec-permission sensor: marks the filesystem of
 * each path given with FAN_OPEN_EXEC_PERM and answers FAN_ALLOW to every
 * event, doing nothing else (no /proc, no argv, no output). `make bench`
 * runs the storm under it to show what the permission round trip alone
 * costs on this machine, apart from anything execsentry does. Like
 * execsentry it puts an ignore mark on the dynamic loader, so a dynamically
 * linked exec waits once, not twice: the floor stays a lower bound.
 *
 *     fanotify_floor / [/other/mount ...]     (root; stops on SIGTERM)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/fanotify.h>
#include <unistd.h>

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

int main(int argc, char **argv)
{
	int fd = fanotify_init(FAN_CLASS_CONTENT | FAN_CLOEXEC, O_RDONLY | O_LARGEFILE | O_CLOEXEC);
	if (fd < 0) {
		perror("fanotify_init");
		return 1;
	}
	for (int i = 1; i < argc; i++) {
		if (fanotify_mark(fd, FAN_MARK_ADD | FAN_MARK_FILESYSTEM, FAN_OPEN_EXEC_PERM,
				  AT_FDCWD, argv[i]) != 0) {
			fprintf(stderr, "fanotify_mark %s: %s\n", argv[i], strerror(errno));
			return 1;
		}
	}
	static const char *loaders[] = {"/lib64/ld-linux-x86-64.so.2", "/lib/ld-musl-x86_64.so.1"};
	for (size_t i = 0; i < sizeof loaders / sizeof loaders[0]; i++) {
		if (access(loaders[i], F_OK) != 0)
			continue;
		if (fanotify_mark(fd, FAN_MARK_ADD | FAN_MARK_IGNORED_MASK | FAN_MARK_IGNORED_SURV_MODIFY,
				  FAN_OPEN_EXEC_PERM, AT_FDCWD, loaders[i]) != 0)
			fprintf(stderr, "ignore mark %s: %s\n", loaders[i], strerror(errno));
	}
	/* No SA_RESTART: the blocking read returns EINTR on SIGTERM. */
	struct sigaction sa = {.sa_handler = on_signal};
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	printf("ready\n");
	fflush(stdout);
	char buf[4096] __attribute__((aligned(8)));
	long events = 0;
	while (!stop) {
		ssize_t n = read(fd, buf, sizeof buf);
		if (n <= 0)
			continue;
		struct fanotify_event_metadata *m = (struct fanotify_event_metadata *)buf;
		for (; FAN_EVENT_OK(m, n); m = FAN_EVENT_NEXT(m, n)) {
			if (m->fd < 0)
				continue;
			struct fanotify_response r = {.fd = m->fd, .response = FAN_ALLOW};
			if (write(fd, &r, sizeof r) < 0)
				perror("fanotify response");
			close(m->fd);
			events++;
		}
	}
	fprintf(stderr, "events=%ld\n", events);
	return 0;
}
