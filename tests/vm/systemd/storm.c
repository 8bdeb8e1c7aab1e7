/* Exec storm for the installed-package VM test: fork+exec+wait of
 * /bin/true for SECONDS seconds, printing how many execs ran and the
 * longest one, so `systemctl stop` during the storm is measured by what the
 * host's execs waited. Static, built on the host: the guest has no compiler. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	double secs = argc > 1 ? atof(argv[1]) : 3.0;
	double start = now(), worst = 0, worst_at = 0;
	long n = 0, failed = 0;
	char *const args[] = {"/bin/true", NULL};
	while (now() - start < secs) {
		double t0 = now();
		pid_t pid = fork();
		if (pid < 0) {
			failed++;
			continue;
		}
		if (pid == 0) {
			execv(args[0], args);
			_exit(127);
		}
		int st;
		if (waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
			failed++;
		double dt = now() - t0;
		if (dt > worst) {
			worst = dt;
			worst_at = t0 - start;
		}
		n++;
	}
	printf("storm: execs=%ld failed=%ld max_ms=%.1f max_at_s=%.2f\n", n, failed, worst * 1e3, worst_at);
	return failed != 0;
}
