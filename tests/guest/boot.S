/*
 * flint test guest: PVH entry, long-mode set-up and the CPL0 pieces.
 *
 * Everything that runs at CPL0 (or in real/32-bit mode) is emulated on this
 * project's machines (~1.5 M instructions/s), so the CPL0 path is kept to a
 * few dozen instructions: the page tables, GDT and TSS are static data, the
 * IDT is filled in later by CPL3 code (all memory is user-accessible), and
 * .bss is zeroed at CPL3 too.
 *
 * CPL3 code asks CPL0 for a service with a marked ud2: the bytes
 * 0f 0b 'F' 'L' 'N' 'T' <service>. The #UD handler recognises the marker and
 * resumes after it; any other #UD is reported like every other exception.
 * (On kvm_pvm a software interrupt `int n` from CPL3 raises #UD instead of
 * going through a DPL3 gate, and `syscall` lands in PVM's own paravirtual
 * supervisor mode, still at hardware CPL3, so neither can be used.)
 *
 * GDT selectors:
 *   0x08 kernel code64   0x10 kernel data   0x18 user data (DPL3)
 *   0x20 user code64 (DPL3)   0x28 TSS (16 bytes)   0x38 kernel code32
 */

#define KCODE64 0x08
#define KDATA 0x10
#define UDATA 0x18
#define UCODE64 0x20
#define TSSSEL 0x28
#define KCODE32 0x38

#define CR0_PE 0x00000001
#define CR0_PG 0x80000000
#define CR0_CD_NW 0x60000000
#define CR4_PAE 0x20
#define MSR_EFER 0xc0000080
#define EFER_LME 0x100

/* The CPL0 service marker (see guest.h): ud2 'F' 'L' 'N' 'T' <service>. */
#define UD_MAGIC_LO 0x4c460b0f          /* 0f 0b 'F' 'L' */
#define UD_MAGIC_HI 0x544e              /* 'N' 'T' */
#define UD_MARKER_LEN 7
#define SERVICE_IDLE 0
#define SERVICE_START_APS 1
#define SERVICE_TRIPLE_FAULT 2
#define SERVICE_WAIT_IRQ 3

#define AP_TRAMPOLINE 0x8000 /* must match kApTrampoline in guest.h */
#define LAPIC_BASE 0xfee00000
#define LAPIC_EOI 0xb0
#define LAPIC_SVR 0xf0
#define LAPIC_ICR_LO 0x300
#define LAPIC_ICR_HI 0x310
/* ICR: destination shorthand "all excluding self", level assert. */
#define ICR_INIT_OTHERS 0x000c4500
#define ICR_SIPI_OTHERS (0x000c4600 | (AP_TRAMPOLINE >> 12))

/* ---- Xen PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY = 18) ---------------- */
/* From 32-bit protected mode, used by the BSP and by the AP trampoline:
 * PAE on, CR3 = the shared page tables, EFER.LME on. Setting CR0.PG next
 * (each caller, with its own CR0 bits) activates long mode. */
.macro ENABLE_LONG_MODE_PAGING
        movl %cr4, %eax
        orl $CR4_PAE, %eax
        movl %eax, %cr4
        movl $pml4, %eax
        movl %eax, %cr3
        movl $MSR_EFER, %ecx
        rdmsr
        orl $EFER_LME, %eax
        wrmsr
.endm

        .section .note.Xen, "a", @note
        .balign 4
        .long 4                 /* namesz: "Xen\0" */
        .long 4                 /* descsz */
        .long 18                /* type */
        .asciz "Xen"
        .balign 4
        .long pvh_entry
        .balign 4

/* ---- 32-bit PVH entry: EBX = &hvm_start_info, paging off --------------- */
        .section .text.boot, "ax"
        .code32
        .globl pvh_entry
pvh_entry:
        cli
        cld
        movl %ebx, boot_start_info
        lgdt gdt_ptr
        ENABLE_LONG_MODE_PAGING
        movl %cr0, %eax
        andl $~CR0_CD_NW, %eax
        orl $(CR0_PG | CR0_PE), %eax
        movl %eax, %cr0
        ljmp $KCODE64, $long_entry

        .code64
long_entry:
        movl $KDATA, %eax
        movl %eax, %ds
        movl %eax, %es
        movl %eax, %ss
        xorl %eax, %eax
        movl %eax, %fs
        movl %eax, %gs
        movl $kstack_top, %esp
        /* The TSS descriptor's base (the address is only known at link time). */
        movl $tss, %eax
        movw %ax, gdt_tss+2(%rip)
        shrl $16, %eax
        movb %al, gdt_tss+4(%rip)
        movb %ah, gdt_tss+7(%rip)
        movl $TSSSEL, %eax
        ltr %ax
        lidt idt_ptr(%rip)
        /* To CPL3 with interrupts off: SS, RSP, RFLAGS, CS, RIP. */
        pushq $(UDATA | 3)
        pushq $ustack_top
        pushq $0x2
        pushq $(UCODE64 | 3)
        pushq $user_entry
        iretq

/* ---- CPL3 from here: zero .bss natively, then C++ ----------------------- */
        .text
user_entry:
        rdtsc                           /* when CPL3 was reached (prog=boottime) */
        movl %eax, cpl3_entry_tsc(%rip)
        movl %edx, cpl3_entry_tsc+4(%rip)
        leaq __bss_start(%rip), %rdi
        leaq __bss_end(%rip), %rcx
        subq %rdi, %rcx
        shrq $3, %rcx
        xorl %eax, %eax
        rep stosq
        call guest_main
1:      pause
        jmp 1b

/* ---- Exception stubs: vector v at exc_stubs + 16*v (.org enforces it) --- */
.macro EXC_NOERR v
        .org exc_stubs + 16 * \v, 0xcc
        pushq $0
        pushq $\v
        jmp exc_common
.endm
.macro EXC_ERR v
        .org exc_stubs + 16 * \v, 0xcc
        pushq $\v
        jmp exc_common
.endm

        .balign 16
        .globl exc_stubs
exc_stubs:
        EXC_NOERR 0
        EXC_NOERR 1
        EXC_NOERR 2
        EXC_NOERR 3
        EXC_NOERR 4
        EXC_NOERR 5
        .org exc_stubs + 16 * 6, 0xcc
        jmp ud_entry
        EXC_NOERR 7
        EXC_ERR 8
        EXC_NOERR 9
        EXC_ERR 10
        EXC_ERR 11
        EXC_ERR 12
        EXC_ERR 13
        EXC_ERR 14
        EXC_NOERR 15
        EXC_NOERR 16
        EXC_ERR 17
        EXC_NOERR 18
        EXC_NOERR 19
        EXC_NOERR 20
        EXC_ERR 21
        EXC_NOERR 22
        EXC_NOERR 23
        EXC_NOERR 24
        EXC_NOERR 25
        EXC_NOERR 26
        EXC_NOERR 27
        EXC_NOERR 28
        EXC_ERR 29
        EXC_ERR 30
        EXC_NOERR 31
        .org exc_stubs + 16 * 32, 0xcc

/* Stack: vector, error code, then the CPU's frame (rip, cs, rflags, rsp, ss). */
exc_common:
        cld
        movq %rsp, %rdi
        andq $-16, %rsp
        call exception_report
1:      cli
        hlt
        jmp 1b

/* The vector a program waits for with SERVICE_WAIT_IRQ: counts it and
 * returns without an EOI, so a level-triggered source cannot be delivered
 * again before the program has quieted it; the program then sends the EOI
 * itself, from CPL3 (the LAPIC page is user-accessible). */
        .globl irq_hold
irq_hold:
        incl irq_held(%rip)
        iretq

/* Any other vector (a stray interrupt while idling): EOI and return. */
        .globl irq_stub
irq_stub:
        pushq %rax
        movb $0x20, %al
        outb %al, $0xa0
        outb %al, $0x20
        movl $(LAPIC_BASE + LAPIC_EOI), %eax
        movl $0, (%rax)
        popq %rax
        iretq

/* #UD. Stack: rip, cs, rflags, rsp, ss. A marked ud2 from CPL3 is a
 * service request:
 *   SERVICE_START_APS: INIT-SIPI-SIPI to every other CPU (the trampoline must
 *     already be at AP_TRAMPOLINE), then resume after the marker. KVM's
 *     in-kernel LAPIC needs no delays in between.
 *   SERVICE_TRIPLE_FAULT: load an empty IDT and fault: the #UD cannot be
 *     delivered, nor the #DF that follows, so the CPU shuts down.
 *   SERVICE_WAIT_IRQ: halt with interrupts on until one interrupt has been
 *     handled, then resume after the marker with interrupts off again.
 *   SERVICE_IDLE (or any other): halt forever with interrupts on. */
ud_entry:
        testb $3, 8(%rsp)
        jz 9f
        pushq %rax
        movq 8(%rsp), %rax              /* faulting RIP */
        cmpl $UD_MAGIC_LO, (%rax)
        jne 8f
        cmpw $UD_MAGIC_HI, 4(%rax)
        jne 8f
        movzbl 6(%rax), %eax
        addq $UD_MARKER_LEN, 8(%rsp)
        cmpl $SERVICE_START_APS, %eax
        je start_aps
        cmpl $SERVICE_TRIPLE_FAULT, %eax
        je triple_fault
        cmpl $SERVICE_WAIT_IRQ, %eax
        je wait_irq
1:      sti
        hlt
        jmp 1b
start_aps:
        movl $LAPIC_BASE, %eax
        movl $0x1ff, LAPIC_SVR(%rax)
        movl $0, LAPIC_ICR_HI(%rax)
        movl $ICR_INIT_OTHERS, LAPIC_ICR_LO(%rax)
        movl $ICR_SIPI_OTHERS, LAPIC_ICR_LO(%rax)
        movl $ICR_SIPI_OTHERS, LAPIC_ICR_LO(%rax)
        popq %rax
        iretq
8:      popq %rax
9:      pushq $0
        pushq $6
        jmp exc_common
triple_fault:
        lidt empty_idt_ptr(%rip)
        ud2
/* sti's one-instruction shadow makes sti+hlt atomic: an interrupt already
 * pending (raised while CPL3 ran with IF clear) wakes the hlt at once. */
wait_irq:
        sti
        hlt
        cli
        popq %rax
        iretq

/* Application processors arrive here in long mode from the trampoline. */
ap_long64:
        movl $KDATA, %eax
        movl %eax, %ds
        movl %eax, %es
        movl %eax, %ss
        lidt idt_ptr(%rip)
        movl $ap_stack_top, %esp
        lock incl ap_online(%rip)
1:      cli
        hlt
        jmp 1b

/* ---- AP trampoline: copied to AP_TRAMPOLINE, entered in real mode at
 *      CS:IP = (AP_TRAMPOLINE >> 4):0 ----------------------------------- */
        .section .rodata.ap_trampoline, "a"
        .globl ap_trampoline_start, ap_trampoline_end
        .code16
ap_trampoline_start:
        cli
        movw %cs, %ax
        movw %ax, %ds
        lgdtl (ap_gdtr - ap_trampoline_start)
        movl %cr0, %eax
        andl $~CR0_CD_NW, %eax
        orl $CR0_PE, %eax
        movl %eax, %cr0
        ljmpl $KCODE32, $(AP_TRAMPOLINE + ap_trampoline32 - ap_trampoline_start)
        .code32
ap_trampoline32:
        movl $KDATA, %eax
        movl %eax, %ds
        movl %eax, %es
        movl %eax, %ss
        ENABLE_LONG_MODE_PAGING
        movl %cr0, %eax
        orl $CR0_PG, %eax
        movl %eax, %cr0
        ljmp $KCODE64, $ap_long64
        .balign 8
ap_gdtr:
        .word gdt_end - gdt - 1
        .long gdt
ap_trampoline_end:
        .code64

/* ---- Static tables ------------------------------------------------------ */
        .section .data.pagetables, "aw"
        .balign 4096
/* Identity map of 0..4 GiB in 2 MiB pages, all Present|Writable|User;
 * 3 GiB and up (the MMIO hole) also PWT|PCD. */
pml4:
        .quad pdpt + 0x7
        .fill 511, 8, 0
pdpt:
        .quad pd + 0x0000 + 0x7
        .quad pd + 0x1000 + 0x7
        .quad pd + 0x2000 + 0x7
        .quad pd + 0x3000 + 0x7
        .fill 508, 8, 0
pd:
        .set page, 0
        .rept 1536
        .quad page + 0x87
        .set page, page + 0x200000
        .endr
        .rept 512
        .quad page + 0x9f
        .set page, page + 0x200000
        .endr

        .data
        .globl boot_start_info, ap_online, cpl3_entry_tsc, irq_held
        .balign 8
boot_start_info:
        .quad 0
cpl3_entry_tsc:
        .quad 0
ap_online:
        .long 0
irq_held:                               /* irq_hold's count */
        .long 0

        .balign 16
gdt:
        .quad 0
        .quad 0x00af9b000000ffff        /* 0x08 kernel code64 */
        .quad 0x00cf93000000ffff        /* 0x10 kernel data */
        .quad 0x00cff3000000ffff        /* 0x18 user data */
        .quad 0x00affb000000ffff        /* 0x20 user code64 */
gdt_tss:                                /* 0x28 64-bit TSS, base patched at boot */
        .word tss_end - tss - 1
        .word 0
        .byte 0
        .byte 0x89
        .byte 0
        .byte 0
        .long 0
        .long 0
        .quad 0x00cf9b000000ffff        /* 0x38 kernel code32 (AP trampoline) */
gdt_end:

        .balign 8
gdt_ptr:
        .word gdt_end - gdt - 1
        .quad gdt
        .balign 8
empty_idt_ptr:                          /* SERVICE_TRIPLE_FAULT */
        .word 0
        .quad 0
        .balign 8
        .globl idt_ptr
idt_ptr:
        .word 256 * 16 - 1
        .quad idt

/* 64-bit TSS, then an I/O permission bitmap allowing every port to CPL3. */
        .balign 16
tss:
        .long 0
        .quad kstack_top                /* RSP0 */
        .quad 0, 0                      /* RSP1, RSP2 */
        .quad 0
        .quad 0, 0, 0, 0, 0, 0, 0       /* IST1..7 */
        .quad 0
        .word 0
        .word tss_iomap - tss           /* I/O map base */
tss_iomap:
        .fill 8192, 1, 0
        .byte 0xff
tss_end:

        .bss
        .balign 4096
        .globl idt
idt:
        .skip 256 * 16
        .balign 16
        .skip 16384
kstack_top:
        .skip 4096
ap_stack_top:
        .skip 65536
ustack_top:

        .section .note.GNU-stack, "", @progbits
