/*
 * storm: the exec-storm driver of `make bench`.
 *
 * W worker processes share a total of N fork+execve("/bin/true") calls. Each
 * child execs with a unique argv:
 *
 *     /bin/true --es-bench=<tag> storm-<worker>-<i>-<ns> end-<worker>-<i>
 *
 * where <ns> is CLOCK_REALTIME in nanoseconds read in the child just before
 * execve, so a reader can compute exec->event latency from the event alone,
 * and the trailing end-* argument shows whether the argv a sensor reports is
 * complete. Every child pid is written to the pid file ("pid worker i" per
 * line) so events can be attributed to the storm even when a sensor lost
 * the argv.
 *
 * Prints one line: "storm: workers=W execs=N failed=F seconds=S rate=R".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static long long now_ns(clockid_t clk)
{
	struct timespec ts;
	clock_gettime(clk, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void usage(const char *argv0)
{
	fprintf(stderr,
		"usage: %s [-w workers] [-n total] [-t tag] [-p pidfile]\n"
		"  defaults: workers = online CPUs, total = 10000, tag = run\n",
		argv0);
	exit(2);
}

/* One worker: `count` execs numbered from 0; child pids go to `pids`. */
static long run_worker(int worker, long count, const char *tag, int *pids)
{
	char tagarg[128], token[96], end[64];
	char *args[] = {"/bin/true", tagarg, token, end, NULL};
	long failed = 0;

	snprintf(tagarg, sizeof tagarg, "--es-bench=%s", tag);
	for (long i = 0; i < count; i++) {
		pid_t pid = fork();
		if (pid < 0) {
			failed++;
			pids[i] = 0;
			/* EAGAIN under a pids limit: back off instead of spinning. */
			usleep(1000);
			continue;
		}
		if (pid == 0) {
			snprintf(end, sizeof end, "end-%d-%ld", worker, i);
			/* Last thing before execve: the latency clock starts here. */
			snprintf(token, sizeof token, "storm-%d-%ld-%lld", worker, i,
				 now_ns(CLOCK_REALTIME));
			execve(args[0], args, environ);
			_exit(127);
		}
		pids[i] = pid;
		int status;
		while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
			;
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
			failed++;
	}
	return failed;
}

int main(int argc, char **argv)
{
	long workers = sysconf(_SC_NPROCESSORS_ONLN);
	long total = 10000;
	const char *tag = "run";
	const char *pidfile = NULL;
	int opt;

	while ((opt = getopt(argc, argv, "w:n:t:p:h")) != -1) {
		switch (opt) {
		case 'w': workers = atol(optarg); break;
		case 'n': total = atol(optarg); break;
		case 't': tag = optarg; break;
		case 'p': pidfile = optarg; break;
		default: usage(argv[0]);
		}
	}
	if (workers < 1 || total < 1)
		usage(argv[0]);
	if (workers > total)
		workers = total;

	/* Shared with the workers: their pids per exec and failure counts. */
	size_t per = (size_t)(total / workers + 1);
	size_t bytes = sizeof(int) * per * (size_t)workers + sizeof(long) * (size_t)workers;
	void *shared = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
			    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (shared == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	int *pids = shared;
	long *failed = (long *)(pids + per * (size_t)workers);

	long long t0 = now_ns(CLOCK_MONOTONIC);
	for (long w = 0; w < workers; w++) {
		long count = total / workers + (w < total % workers ? 1 : 0);
		pid_t pid = fork();
		if (pid < 0) {
			perror("fork worker");
			return 1;
		}
		if (pid == 0) {
			failed[w] = run_worker((int)w, count, tag, pids + per * (size_t)w);
			_exit(0);
		}
	}
	for (long w = 0; w < workers; w++) {
		while (wait(NULL) < 0 && errno == EINTR)
			;
	}
	double secs = (double)(now_ns(CLOCK_MONOTONIC) - t0) / 1e9;

	long nfailed = 0;
	for (long w = 0; w < workers; w++)
		nfailed += failed[w];
	if (pidfile) {
		FILE *f = fopen(pidfile, "w");
		if (!f) {
			perror(pidfile);
			return 1;
		}
		for (long w = 0; w < workers; w++) {
			long count = total / workers + (w < total % workers ? 1 : 0);
			for (long i = 0; i < count; i++)
				fprintf(f, "%d %ld %ld\n", pids[per * (size_t)w + i], w, i);
		}
		fclose(f);
	}
	printf("storm: workers=%ld execs=%ld failed=%ld seconds=%.3f rate=%.0f\n",
	       workers, total, nfailed, secs, (double)total / secs);
	return 0;
}
