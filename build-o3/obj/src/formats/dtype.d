build-o3/obj/src/formats/dtype.o: src/formats/dtype.c src/formats/dtype.h
src/formats/dtype.h:
