/*
 * The camera rig's feeder: plays a camera on a v4l2loopback output node, as a webcam's firmware
 * would. Each file named on the command line is one compressed picture (a JPEG, or an H.264
 * access unit in Annex B) and goes to the driver in one write(), which v4l2loopback hands to its
 * reader as one buffer. The files are played in order, looped, at the given rate, until the
 * feeder is killed (the rig's "unplug").
 *
 *   v4l2_feeder /dev/video0 MJPG 640 480 15 f001.jpg f002.jpg ...
 *
 * Built statically by the rig (tests/support/vivid.rs) so the guest needs no C library.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/videodev2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct picture {
    char *data;
    size_t size;
};

static void die(const char *what, const char *detail) {
    fprintf(stderr, "v4l2_feeder: %s %s: %s\n", what, detail, strerror(errno));
    exit(1);
}

static struct picture load(const char *path) {
    struct picture picture = {0};
    int fd = open(path, O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0)
        die("cannot read", path);
    picture.size = (size_t)st.st_size;
    picture.data = malloc(picture.size);
    if (!picture.data || read(fd, picture.data, picture.size) != (ssize_t)picture.size)
        die("cannot read", path);
    close(fd);
    return picture;
}

int main(int argc, char **argv) {
    if (argc < 7 || strlen(argv[2]) != 4) {
        fprintf(stderr, "usage: %s DEVICE FOURCC WIDTH HEIGHT FPS FILE...\n", argv[0]);
        return 2;
    }
    const char *device = argv[1];
    const char *c = argv[2];
    unsigned width = (unsigned)atoi(argv[3]), height = (unsigned)atoi(argv[4]);
    int fps = atoi(argv[5]);
    if (fps <= 0) {
        fprintf(stderr, "v4l2_feeder: FPS must be positive\n");
        return 2;
    }
    int count = argc - 6;
    struct picture *pictures = calloc((size_t)count, sizeof *pictures);
    if (!pictures)
        die("out of memory", "");
    size_t largest = 0;
    for (int i = 0; i < count; i++) {
        pictures[i] = load(argv[6 + i]);
        if (pictures[i].size > largest)
            largest = pictures[i].size;
    }

    int fd = open(device, O_RDWR);
    if (fd < 0)
        die("cannot open", device);
    struct v4l2_format format = {.type = V4L2_BUF_TYPE_VIDEO_OUTPUT};
    format.fmt.pix.width = width;
    format.fmt.pix.height = height;
    format.fmt.pix.pixelformat = v4l2_fourcc(c[0], c[1], c[2], c[3]);
    format.fmt.pix.field = V4L2_FIELD_NONE;
    format.fmt.pix.sizeimage = (unsigned)largest;
    if (ioctl(fd, VIDIOC_S_FMT, &format) < 0)
        die("VIDIOC_S_FMT on", device);
    if (format.fmt.pix.sizeimage < largest) {
        fprintf(stderr, "v4l2_feeder: %s takes %u bytes a picture, the largest file has %zu\n",
                device, format.fmt.pix.sizeimage, largest);
        return 1;
    }
    struct v4l2_streamparm parm = {.type = V4L2_BUF_TYPE_VIDEO_OUTPUT};
    parm.parm.output.timeperframe.numerator = 1;
    parm.parm.output.timeperframe.denominator = (unsigned)fps;
    if (ioctl(fd, VIDIOC_S_PARM, &parm) < 0)
        die("VIDIOC_S_PARM on", device);
    fprintf(stderr, "v4l2_feeder: %s: %d pictures of %s %ux%u at %d fps\n", device, count, c,
            width, height, fps);

    /* Absolute deadlines, so the rate does not drift with the time write() takes. */
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    long interval_ns = 1000000000L / fps;
    for (unsigned long n = 0;; n++) {
        struct picture *p = &pictures[n % (unsigned long)count];
        if (write(fd, p->data, p->size) != (ssize_t)p->size)
            die("write to", device);
        next.tv_nsec += interval_ns;
        while (next.tv_nsec >= 1000000000L) {
            next.tv_nsec -= 1000000000L;
            next.tv_sec++;
        }
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL) == EINTR) {
        }
    }
}
