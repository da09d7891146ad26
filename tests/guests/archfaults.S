# Faults the guest causes itself, each recorded as (vector, error code, saved EIP) in `results`
# by one common handler that then skips the faulting instruction (length in `skip`):
#   unknown MSR -> #GP(0); LIDT operand in the monitor hole -> #GP(0) (truncated segment);
#   UD2 -> #UD; INT through a not-present gate -> #NP(vector*8+2); INT beyond the IDT limit is
#   not tried (the IDT has 256 gates); a load from the monitor hole -> #GP(0).
        .include "common.inc"
        .macro record_fault vec
fault_\vec:
        push $\vec
        jmp fault_common
        .endm
        .macro record_fault_noerr vec
fault_\vec:
        push $0
        push $\vec
        jmp fault_common
        .endm
        .text
        .globl _start
_start:
        mov $stack_top, %esp
        call setup_tables
        set_gate 6, fault_6, 0x8E
        set_gate 11, fault_11, 0x8E
        set_gate 13, fault_13, 0x8E
        # gate 0x42: not present (attr 0x0E)
        set_gate 0x42, fault_13, 0x0E

        movl $2, skip
        mov $0x12345, %ecx
msr_insn:
        rdmsr
        movl $7, skip
lidt_insn:
        lidt 0xfffffff0
        movl $2, skip
ud_insn:
        ud2
        movl $2, skip                   # #NP is a fault: the saved EIP is the INT itself
np_insn:
        int $0x42
        movl $5, skip
hole_insn:
        mov 0xffc00010, %eax            # the monitor hole: beyond every guest segment
        movl nresults, %eax
        exit_with 0x03

        record_fault_noerr 6
        record_fault 11
        record_fault 13
# stack: vector, error, eip, cs, eflags
fault_common:
        push %eax
        push %ebx
        mov nresults, %ebx
        imul $12, %ebx
        mov 8(%esp), %eax
        mov %eax, results(%ebx)
        mov 12(%esp), %eax
        mov %eax, results+4(%ebx)
        mov 16(%esp), %eax
        mov %eax, results+8(%ebx)
        incl nresults
        mov skip, %eax
        add %eax, 16(%esp)
        pop %ebx
        pop %eax
        add $8, %esp
        iret

        .data
        .globl results, nresults
skip:   .long 0
nresults: .long 0
results: .fill 16 * 3, 4, 0
