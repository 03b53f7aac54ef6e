#include "textflag.h"

// func rdtsc() uint64
// LFENCE keeps the read from being hoisted above the clock read it is paired with.
TEXT ·rdtsc(SB), NOSPLIT, $0-8
	LFENCE
	RDTSC
	SHLQ $32, DX
	ORQ  DX, AX
	MOVQ AX, ret+0(FP)
	RET
