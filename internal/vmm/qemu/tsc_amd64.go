package qemu

// rdtsc reads the CPU's time-stamp counter (implemented in tsc_amd64.s).
func rdtsc() uint64

const haveTSC = true
