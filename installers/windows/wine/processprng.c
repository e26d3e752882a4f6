/*
 * bcryptprimitives.dll for the Wine test prefix only (never shipped): Rust's standard library on
 * Windows takes its random numbers from ProcessPrng, which Windows 10 and later have and Wine 8 lacks,
 * so without this every Rust program exits at start under Wine 8 (exit code 53). It forwards to
 * advapi32's RtlGenRandom (SystemFunction036), which Wine has.
 *
 * Built by the Windows test: x86_64-w64-mingw32-gcc -shared -o bcryptprimitives.dll processprng.c processprng.def -ladvapi32
 */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length)
{
    while (length > 0) {
        ULONG chunk = length > 0x40000000 ? 0x40000000 : (ULONG)length;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        length -= chunk;
    }
    return TRUE;
}
