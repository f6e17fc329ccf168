/* ckpt-stub: the smallest process the restorer can rebuild into a checkpointed one.
 * No libc, no data. The restorer execs it under PTRACE_TRACEME, stops it at the exec trap, and
 * replaces its whole address space through remote syscalls: a rebuilt stub never runs this code.
 *
 * One stub does run it: the init of a pid namespace recreated for a tree that was not the whole
 * namespace (its old init is not in the image). Detached at the end of the restore, it reaps
 * every child and orphan of the namespace, and once none is left exits with the wait status of
 * the task whose pid the restorer put in rbx (the tree's root), as `exit` or 128 + signal. */
__asm__(
    ".globl _start\n"
    "_start:\n"
    "  mov %rbx, %rdi\n"
    "  and $-16, %rsp\n"
    "  call stub_main\n"
    "  hlt\n");

static long sys4(long nr, long a, long b, long c, long d) {
  register long r10 __asm__("r10") = d;
  __asm__ volatile("syscall" : "+a"(nr) : "D"(a), "S"(b), "d"(c), "r"(r10) : "rcx", "r11", "memory");
  return nr;
}

#define SYS_wait4 61
#define SYS_exit_group 231
#define ECHILD 10
#define EINTR 4
#define WALL 0x40000000L

__attribute__((used, noreturn)) void stub_main(long watch) {
  int code = 0;
  for (;;) {
    int status = 0;
    long r = sys4(SYS_wait4, -1, (long)&status, WALL, 0);
    if (r == watch && watch > 0) code = (status & 0x7f) ? 128 + (status & 0x7f) : (status >> 8) & 0xff;
    if (r == -ECHILD) sys4(SYS_exit_group, code, 0, 0, 0);
    if (r < 0 && r != -EINTR) sys4(SYS_exit_group, 127, 0, 0, 0);
  }
}
