/* A 32-bit x86 program for the installed-package VM test: it only exits.
 * What is checked is the argv the sensor reports for its exec, which the
 * kernel starts through compat_start_thread, not start_thread. No libc
 * (the host has no 32-bit one): gcc -m32 -static -nostdlib. */
void _start(void)
{
	__asm__ volatile("movl $1, %eax\n\txorl %ebx, %ebx\n\tint $0x80");
	for (;;)
		;
}
