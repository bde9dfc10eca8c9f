/*
 * srtp_tool: protect or unprotect RTP/RTCP packets with libsrtp2, for the
 * interop test tests/srtp_libsrtp.rs.
 *
 *   srtp_tool protect|unprotect rtp|rtcp SUITE KEY_SALT_HEX
 *
 * SUITE is an SDES crypto-suite name (AES_CM_128_HMAC_SHA1_80, ...);
 * KEY_SALT_HEX is the master key followed by the master salt, in hex.
 * One session per run: ssrc_any_outbound for protect, ssrc_any_inbound for
 * unprotect, so per-SSRC state (ROC, replay window, SRTCP index) carries
 * across the packets of a run.
 *
 * Framing, both directions: a packet is a 4-byte big-endian length followed
 * by that many bytes. For every input packet one record is written:
 * 4-byte big-endian libsrtp status (0 = ok), 4-byte big-endian length, then
 * the output packet (length 0 on error). EOF on stdin ends the run.
 *
 * Build: cc -O2 -o srtp_tool srtp_tool.c -lsrtp2   (Debian: libsrtp2-dev)
 */
#include <srtp2/srtp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PACKET_MAX 4096

static int set_policy(srtp_policy_t *p, const char *suite, size_t *key_len) {
    if (!strcmp(suite, "AES_CM_128_HMAC_SHA1_80")) {
        srtp_crypto_policy_set_aes_cm_128_hmac_sha1_80(&p->rtp);
        srtp_crypto_policy_set_aes_cm_128_hmac_sha1_80(&p->rtcp);
        *key_len = 16 + 14;
    } else if (!strcmp(suite, "AES_CM_128_HMAC_SHA1_32")) {
        /* SRTCP keeps the 80-bit tag (RFC 4568 section 6.2.2). */
        srtp_crypto_policy_set_aes_cm_128_hmac_sha1_32(&p->rtp);
        srtp_crypto_policy_set_aes_cm_128_hmac_sha1_80(&p->rtcp);
        *key_len = 16 + 14;
    } else if (!strcmp(suite, "AES_256_CM_HMAC_SHA1_80")) {
        srtp_crypto_policy_set_aes_cm_256_hmac_sha1_80(&p->rtp);
        srtp_crypto_policy_set_aes_cm_256_hmac_sha1_80(&p->rtcp);
        *key_len = 32 + 14;
    } else if (!strcmp(suite, "AES_256_CM_HMAC_SHA1_32")) {
        srtp_crypto_policy_set_aes_cm_256_hmac_sha1_32(&p->rtp);
        srtp_crypto_policy_set_aes_cm_256_hmac_sha1_80(&p->rtcp);
        *key_len = 32 + 14;
    } else if (!strcmp(suite, "AEAD_AES_128_GCM")) {
        srtp_crypto_policy_set_aes_gcm_128_16_auth(&p->rtp);
        srtp_crypto_policy_set_aes_gcm_128_16_auth(&p->rtcp);
        *key_len = 16 + 12;
    } else if (!strcmp(suite, "AEAD_AES_256_GCM")) {
        srtp_crypto_policy_set_aes_gcm_256_16_auth(&p->rtp);
        srtp_crypto_policy_set_aes_gcm_256_16_auth(&p->rtcp);
        *key_len = 32 + 12;
    } else {
        return -1;
    }
    return 0;
}

static int unhex(const char *s, unsigned char *out, size_t out_len) {
    if (strlen(s) != 2 * out_len)
        return -1;
    for (size_t i = 0; i < out_len; i++) {
        unsigned int b;
        if (sscanf(s + 2 * i, "%2x", &b) != 1)
            return -1;
        out[i] = (unsigned char)b;
    }
    return 0;
}

static int read_exact(unsigned char *buf, size_t n) {
    return fread(buf, 1, n, stdin) == n ? 0 : -1;
}

static void put_u32(unsigned char *b, uint32_t v) {
    b[0] = v >> 24;
    b[1] = v >> 16;
    b[2] = v >> 8;
    b[3] = v;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s protect|unprotect rtp|rtcp SUITE KEY_SALT_HEX\n", argv[0]);
        return 2;
    }
    int protect = !strcmp(argv[1], "protect");
    int rtcp = !strcmp(argv[2], "rtcp");
    if ((!protect && strcmp(argv[1], "unprotect")) || (!rtcp && strcmp(argv[2], "rtp"))) {
        fprintf(stderr, "bad mode %s %s\n", argv[1], argv[2]);
        return 2;
    }

    srtp_policy_t policy;
    memset(&policy, 0, sizeof policy);
    size_t key_len = 0;
    if (set_policy(&policy, argv[3], &key_len)) {
        fprintf(stderr, "unknown suite %s\n", argv[3]);
        return 2;
    }
    unsigned char key[64];
    if (unhex(argv[4], key, key_len)) {
        fprintf(stderr, "key+salt must be %zu bytes of hex\n", key_len);
        return 2;
    }
    policy.ssrc.type = protect ? ssrc_any_outbound : ssrc_any_inbound;
    policy.key = key;
    policy.window_size = 128;
    policy.allow_repeat_tx = 0;
    policy.next = NULL;

    srtp_err_status_t st = srtp_init();
    if (st) {
        fprintf(stderr, "srtp_init: %d\n", st);
        return 1;
    }
    srtp_t session;
    st = srtp_create(&session, &policy);
    if (st) {
        fprintf(stderr, "srtp_create: %d\n", st);
        return 1;
    }

    /* Room for the trailer libsrtp may append (tag, MKI, SRTCP index). */
    static unsigned char buf[PACKET_MAX + SRTP_MAX_TRAILER_LEN + 4];
    unsigned char hdr[8];
    for (;;) {
        if (read_exact(hdr, 4))
            break;
        uint32_t n = (uint32_t)hdr[0] << 24 | hdr[1] << 16 | hdr[2] << 8 | hdr[3];
        if (n > PACKET_MAX || read_exact(buf, n)) {
            fprintf(stderr, "bad frame\n");
            return 1;
        }
        int len = (int)n;
        if (protect)
            st = rtcp ? srtp_protect_rtcp(session, buf, &len) : srtp_protect(session, buf, &len);
        else
            st = rtcp ? srtp_unprotect_rtcp(session, buf, &len) : srtp_unprotect(session, buf, &len);
        if (st)
            len = 0;
        put_u32(hdr, (uint32_t)st);
        put_u32(hdr + 4, (uint32_t)len);
        if (fwrite(hdr, 1, 8, stdout) != 8 || fwrite(buf, 1, (size_t)len, stdout) != (size_t)len)
            return 1;
    }
    fflush(stdout);
    srtp_dealloc(session);
    srtp_shutdown();
    return 0;
}
