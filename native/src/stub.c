/* ckpt-stub: the smallest process the restorer can rebuild into a checkpointed one.
 * No libc, no data: it only waits. The restorer execs it under PTRACE_TRACEME, stops it at the
 * exec trap, and replaces its whole address space through remote syscalls. */
void _start(void) {
  for (;;) {
    long nr = 34; /* pause */
    __asm__ volatile("syscall" : "+a"(nr) : : "rcx", "r11", "memory");
  }
}
