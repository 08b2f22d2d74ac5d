/* The pause process of the test stack's infra image (scripts/images.sh): Nomad's docker driver
 * starts it first in bridge mode to hold the allocation's network namespace, which the task
 * containers join. Like Kubernetes' pause (build/pause/linux/pause.c): sleeps until SIGINT or
 * SIGTERM, then exits 0; as PID 1 it reaps the children it inherits. */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int sig) { (void)sig; _exit(0); }

static void reap(int sig) {
  (void)sig;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

int main(void) {
  struct sigaction s = {0};
  s.sa_handler = stop;
  sigaction(SIGINT, &s, NULL);
  sigaction(SIGTERM, &s, NULL);
  s.sa_handler = reap;
  s.sa_flags = SA_NOCLDSTOP;
  sigaction(SIGCHLD, &s, NULL);
  for (;;) pause();
  return 0;
}
